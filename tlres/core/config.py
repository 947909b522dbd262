"""Experiment configuration: one frozen dataclass, presets as data.

Every setting a run uses is a field of `Config`; `config.json` in a run directory is
`dataclasses.asdict(config)` plus versions. Presets are plain `Config` values. The command line
is generated from the fields (`tlres.commands.cli`), so a new field is a new flag with its help.

The paper (Shi, Hu, Yu, Jiang) fixes: ResNet50 pretrained on ImageNet with a new 10-way head, all
layers trained; CIFAR-10 at 32x32; flip p=0.5, pad 4 and random crop, normalize with mean 0.5 /
std 0.5; label-smoothed cross-entropy in its eq. 11 form; cosine annealing (eq. 14); batch 64;
50 epochs. It leaves open the optimizer, learning rates, epsilon and weight decay: the defaults
for those are ours and docs/presets.md says why.
"""

import dataclasses
import math
import types
from dataclasses import dataclass, field

from tlres.core.errors import TlresError


COMPUTES, EXECUTION = "computes", "execution"
"""The two halves of the settings (config.json records both): what a run computes, and how it is
executed. `EXECUTION_FIELDS` below says which fields are the second half, and why."""


def _f(default, help, choices=None, kind=None, half=COMPUTES, const=None):
    """A field; `const`: the value of its flag given without one (`--flag` alone), when it may be."""
    return field(default=default, metadata={"help": help, "choices": choices, "type": kind, "half": half,
                                            "const": const})


def _x(default, help, choices=None, kind=None, const=None):
    """A field of how a run is executed (`EXECUTION_FIELDS`)."""
    return _f(default, help, choices, kind, EXECUTION, const)


TENSORBOARD_IN_RUN = "RUN/tb"
"""--tensorboard given without a DIR: the run directory's own tb/ folder (`tlres.run.curves`)."""


@dataclass(frozen=True)
class Config:
    # -- data
    data: str = _f("cifar10", "cifar10 (tensorflow-datasets), digits (scikit-learn, offline), "
                   "fashion-mnist (Debian's dataset-fashion-mnist, offline), "
                   "a cifar-10-python.tar.gz or cifar-10-batches-py/ path, a folder of the four "
                   "MNIST-format idx files, a .npz file, or a folder of images: DIR/train/<class>/ "
                   "and DIR/test/<class>/, or DIR/<class>/ (split by --test-split)")
    test_split: float = _f(0.2, "for --data DIR/<class>/: the fraction of each class held out for "
                           "testing (a fixed split by file name, the same in every run; see split.csv)")
    skip_bad_images: bool = _f(False, "for a folder of images: skip unreadable or corrupt images "
                               "(counted, listed in split.csv) instead of stopping")
    data_dir: str | None = _f(None, "tensorflow-datasets data directory (for --data cifar10; "
                              "default: tensorflow-datasets' own, $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    image_size: int = _f(32, "model input size in pixels, 8..1024; images of another size are resized")
    arch: str = _f("resnet50", "network: resnet50 (Keras' ResNet50, v1, Keras' ImageNet weights), "
                   "resnet50_v1_5 (torchvision's ResNet50, the network the paper trained; weights "
                   "from torchvision/timm files), or tiny (a 3-conv network for fast plumbing tests; "
                   "not for results)", ("resnet50", "resnet50_v1_5", "tiny"))
    # -- the four improvements of the paper
    weights: str = _f("imagenet", "backbone initialisation: imagenet (the --arch's own ImageNet "
                      "weights: Keras' cache for resnet50, torch's hub cache for resnet50_v1_5), "
                      "torchvision (torchvision's IMAGENET1K_V1 file, resnet50_v1_5 only), none "
                      "(random), a finished run's directory or .keras model (its backbone), a "
                      ".weights.h5 file, or a torchvision/timm-layout state dict (.safetensors; "
                      ".pth/.pt with torch installed) for resnet50_v1_5 (tiny: the PyTorch "
                      "reference's tiny model.pt)")
    augment: bool = _f(True, "training-time augmentation (flip and pad-crop below); "
                       "off = normalization only")
    label_smoothing: float = _f(0.1, "label smoothing epsilon; 0 = plain cross-entropy")
    schedule: str = _f("cosine-epoch", "learning-rate schedule: cosine-epoch (PyTorch "
                       "CosineAnnealingLR, T_max=epochs), cosine-step (Keras CosineDecay per step), "
                       "constant", ("cosine-epoch", "cosine-step", "constant"))
    # -- details of the improvements
    flip: bool = _f(True, "random horizontal flip with p=0.5 (when --augment)")
    crop_padding: int = _f(4, "zero-pad this many pixels and random-crop back (when --augment); 0 = off")
    smoothing_form: str = _f("paper", "paper: eq. 11, 1-eps on the true class and eps/(C-1) on the "
                             "others; keras: Keras' label_smoothing, eps/C added to every class",
                             ("paper", "keras"))
    input_norm: str = _f("paper", "paper: (x/255-0.5)/0.5 per channel; caffe: the ImageNet "
                         "weights' own BGR mean subtraction", ("paper", "caffe"))
    bn_momentum: float = _f(0.9, "BatchNormalization momentum (Keras convention; PyTorch's 0.1 = 0.9)")
    bn_epsilon: float = _f(1e-5, "BatchNormalization epsilon (PyTorch's default)")
    # -- options beyond the paper (off by default; docs/options.md)
    warmup_epochs: int = _f(0, "linear warmup over the first N epochs (N < --epochs), per step: step s of "
                            "the W = N x steps-per-epoch warmup steps trains at lr*(s+1)/W, then "
                            "--schedule runs over the remaining epochs (torch's LinearLR then "
                            "SequentialLR); 0 = none")
    ema: float = _f(0.0, "exponential moving average of the weights with this decay per step (Keras' "
                    "optimizer EMA, e.g. 0.999): the per-epoch and final evaluation, predictions.csv "
                    "and model.keras use the averaged weights, training goes on with the raw ones; "
                    "BatchNorm's statistics are not averaged; 0 = off")
    randaugment: str | None = _f(None, "N,M: RandAugment on each training image, N random operations at "
                                 "magnitude M of 0..30 (torchvision's scale; Keras' RandAugment factor "
                                 "M/30), after flip and crop, as torchvision's reference recipes order them; default off")
    mixup: float = _f(0.0, "MixUp (Keras' MixUp): each image mixed with another of its batch by a "
                      "weight drawn from Beta(ALPHA, ALPHA) per image (torchvision's reference: one "
                      "per batch), its label by the same weight; 0 = off")
    cutmix: float = _f(0.0, "CutMix (Keras' CutMix): a box of another image of the batch pasted into "
                       "each image, its area drawn from Beta(ALPHA, ALPHA), the labels mixed by the "
                       "share of pixels kept; 0 = off. With --mixup too, each batch gets one of the "
                       "two, with probability 0.5 each")
    freeze_backbone_epochs: int = _f(0, "train only the new head for the first K epochs (K < --epochs; "
                                     "the backbone frozen, its BatchNorm statistics too), then every "
                                     "layer (fastai's fine_tune); the optimizer's state and the schedule "
                                     "run on across the switch; 0 = every layer from the start")
    # -- optimisation
    optimizer: str = _f("sgd", "optimizer", ("sgd", "adam", "adamw"))
    lr: float = _f(0.01, "peak learning rate (eta_max)")
    lr_min: float = _f(0.0, "final learning rate of the cosine schedules (eta_min)")
    momentum: float = _f(0.9, "SGD momentum (Nesterov off, as torch.optim.SGD's default)")
    weight_decay: float = _f(5e-4, "weight decay (Keras' decoupled form; see docs/presets.md)")
    epochs: int = _f(50, "training epochs")
    batch_size: int = _f(64, "batch size (training batches are all this size; the remainder is dropped)")
    seed: int = _f(0, "seed for weights, data order and augmentation")
    # -- run
    out: str | None = _x(None, "run directory (default: runs/<preset>-<time>)")
    pipeline: str = _f("auto", "training input pipeline: tf (tf.data, augmentation on the host), "
                       "jax (numpy batches, augmentation jitted on the device; trains without "
                       "importing tensorflow), auto (tf if tensorflow is installed, else jax)", ("auto", "tf", "jax"))
    precision: str = _f("float32", "Keras dtype policy: float32, or mixed_bfloat16 (bf16 compute, "
                        "float32 weights, head and loss)", ("float32", "mixed_bfloat16"))
    data_parallel: bool = _f(False, "train with keras.distribution.DataParallel over all devices "
                             "(--batch-size is the global batch, split evenly across them)")
    num_processes: int | None = _x(None, "processes that train this run together, on one or several "
                                   "machines, each with its own --process-id (default: "
                                   "$KERAS_DISTRIBUTION_NUM_PROCESSES, else 1); needs --data-parallel; "
                                   "see docs/distributed.md", kind=int)
    process_id: int | None = _x(None, "this process' number, 0..N-1; process 0 coordinates and alone "
                                "writes the run directory (default: $KERAS_DISTRIBUTION_PROCESS_ID)",
                                kind=int)
    coordinator: str | None = _x(None, "HOST:PORT of process 0 and a free port there, the same on every "
                                 "process (default: the first address in "
                                 "$KERAS_DISTRIBUTION_JOB_ADDRESSES)")
    cluster: str = _x("none", "auto: take the process count, id and coordinator from a SLURM job step "
                      "(srun) or an Open MPI job (mpirun), read as jax.distributed's own detection "
                      "reads them, instead of the three flags above",
                      ("none", "auto"))
    coordinator_bind: str | None = _x(None, "HOST:PORT where process 0's coordinator listens (default: "
                                      "$JAX_COORDINATOR_BIND_ADDRESS, else --coordinator itself: the "
                                      "interface of that address only); a wildcard (0.0.0.0, ::, *) needs "
                                      "--wildcard-bind")
    wildcard_bind: bool = _x(False, "let process 0's coordinator listen on every interface (a wildcard "
                             "--coordinator-bind), where anyone who reaches the port can try to join; "
                             "see docs/distributed.md, Network and trust")
    run_token: str | None = _x(None, "a secret every process of the run must show before training "
                               "(default: $TLRES_RUN_TOKEN, which `ps` does not show, else one derived "
                               "from the settings and the data, which only checks that they agree); "
                               "never recorded")
    coordinator_timeout: int = _x(300, "seconds a process waits for the coordinator and every other "
                                  "process to join before it gives up (one line, exit 2)")
    data_on_device: bool = _x(False, "with the jax pipeline: hold the whole uint8 training split on the "
                              "device and build every batch there, several per dispatch: the same "
                              "batches and augmentation as on the host, without feeding each batch from "
                              "host memory (for a split that fits in device memory)")
    conv: str = _x("auto", "convolution kernels: xla (XLA's own), matmul (im2col + one matmul, "
                   "the same function; trains 1.7-3.7x faster than xla on the CPUs measured, see "
                   "docs/speed.md), auto (on a CPU each distinct convolution gets the faster of "
                   "the two as timed on the host, once, cached; xla on a GPU)", ("auto", "xla", "matmul"))
    keep_checkpoint: bool = _x(False, "keep ckpt/ (weights and optimizer state, for --resume) after "
                               "the run finishes; a finished run otherwise keeps model.keras only")
    checkpoint_every: int = _x(0, "also write the checkpoint every N training steps, not only at "
                               "each epoch's end (0: epoch ends only); --resume continues at that step")
    checkpoint_on_signal: bool = _x(True, "on SIGTERM or SIGINT, finish the current step, write a "
                                    "checkpoint there and stop (exit 143 or 130); off: stop at once, "
                                    "keeping the last checkpoint")
    tensorboard: str | None = _x(None, "write TensorBoard curves while training (per epoch history.csv's "
                                 "values, and the training loss every --tensorboard-every steps) into "
                                 "TENSORBOARD/<run name>/<framework>, a folder several runs can share; "
                                 f"given alone: {TENSORBOARD_IN_RUN}/<framework>, the run directory's tb/ "
                                 "folder; see docs/options.md", const=TENSORBOARD_IN_RUN)
    tensorboard_every: int = _x(50, "with --tensorboard: log the mean training loss of the epoch so far "
                                "every N steps (numbered over the whole run); 0 = per epoch only")
    compile_cache: bool = _x(True, "share JAX's persistent compilation cache (~/.cache/tlres/jax)")
    preset: str = _f("improved", "the preset these settings started from")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def validate(self, where=None):
        """Check every field against its declared type, choices and `RULES`; returns self.

        The command line's types and choices come from the same place (`tlres.commands.cli`); this is for
        a Config from anywhere else (Python, a resumed run's config.json). One line naming the
        first bad field: as a flag, or, with `where` (e.g. "--resume RUN: config.json"), as a field.
        """
        def name(field_name):
            return f"{where}: {field_name}" if where else "--" + field_name.replace("_", "-")

        for f in dataclasses.fields(self):
            value, bad = getattr(self, f.name), field_problem(f, getattr(self, f.name))
            if bad:
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "..."
                raise TlresError(f"{name(f.name)} {bad}, got {shown}")
        for f in BELOW_EPOCHS:
            if getattr(self, f) >= self.epochs:
                raise TlresError(f"{name(f)} must be less than {name('epochs')} ({self.epochs}), "
                                 f"got {getattr(self, f)}")
        return self


MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024
"""--image-size bounds. 8: the smallest size tlres' tests train (--arch tiny). 1024: 4.6x ImageNet's
224 per side, 21x its pixels; ResNet50 training at 1024 holds gigabytes of activations per image
(docs/bad-input.md), so a larger size is a typo or a hostile file, not a run tlres can train."""

RULES = {
    "epochs": (lambda v: 0 < v <= 10 ** 6, "must be positive (at most 1000000)"),
    "batch_size": (lambda v: 0 < v <= 2 ** 20, "must be positive (at most 1048576)"),
    "lr": (lambda v: v > 0, "must be positive"),
    "image_size": (lambda v: MIN_IMAGE_SIZE <= v <= MAX_IMAGE_SIZE,
                   f"must be {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} pixels"),
    "num_processes": (lambda v: 0 < v <= 2 ** 16, "must be positive (at most 65536)"),
    "coordinator_timeout": (lambda v: v > 0, "must be positive"),
    "test_split": (lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)"),
    "seed": (lambda v: 0 <= v < 2 ** 32, "must be 0..4294967295"),
    "label_smoothing": (lambda v: 0 <= v < 1, "must be >= 0 and < 1"),
    "bn_momentum": (lambda v: 0 <= v <= 1, "must be between 0 and 1"),
    "bn_epsilon": (lambda v: v > 0, "must be positive"),
    "ema": (lambda v: 0 <= v < 1, "must be >= 0 and < 1 (0 = off)"),
    "randaugment": (lambda v: randaugment_ops(v) is not None,
                    "must be N,M: N operations (1..14) at magnitude M (0..30), e.g. 2,9"),
    **{name: (lambda v: v >= 0, "must be >= 0") for name in (
        "lr_min", "weight_decay", "momentum", "crop_padding", "checkpoint_every", "process_id",
        "tensorboard_every",
        "warmup_epochs", "mixup", "cutmix", "freeze_backbone_epochs")},
}
"""(check, rule) per numeric field with a range: the command line's flags and `Config.validate`."""

BELOW_EPOCHS = ("warmup_epochs", "freeze_backbone_epochs")
"""Fields counting epochs of a phase that must end before the run does (`Config.validate`)."""


def randaugment_ops(text):
    """(N, M) of a --randaugment value "N,M", or None if it is not N in 1..14, M in 0..30."""
    parts = str(text).split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        return None
    n, m = (int(p) for p in parts)
    return (n, m) if 1 <= n <= 14 and 0 <= m <= 30 else None


def field_problem(f, value):
    """What is wrong with `value` for the Config field `f` (a dataclasses.Field), or None."""
    declared = f.type if not isinstance(f.type, str) else type(f.default)
    kinds = declared.__args__ if isinstance(declared, types.UnionType) else (declared,)
    if type(value) is bool and bool not in kinds:
        return f"must be {_kind_names(kinds)}"
    if not isinstance(value, kinds) and not (float in kinds and type(value) is int):
        return f"must be {_kind_names(kinds)}"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if f.metadata.get("choices") and value not in f.metadata["choices"]:
        return f"must be one of {', '.join(f.metadata['choices'])}"
    if isinstance(value, str) and not value:
        return "must not be empty"
    check, rule = RULES.get(f.name, (None, None))
    return rule if value is not None and check is not None and not check(value) else None


def _kind_names(kinds):
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             type(None): "null"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


IMPROVED = Config()
"""The paper's New-ResNet50: all four improvements on, CIFAR-10, 50 epochs."""

RUNLOCAL_USES = ("quick", "grid", "parity")
"""What the offline digits settings serve: the quick preset, the offline grid (`tlres ablation`,
`tlres crosscheck`) and the trajectory parity (`tlres parity`)."""


def get_config(runlocal=False, use="quick"):
    """The improved recipe's changes, {Config field: value}: none for the paper's own run, or with
    `runlocal` the one set that makes a run offline and CPU-sized on scikit-learn's digits, for `use`.

    Every use: data digits, weights none (ImageNet weights cannot be had offline). quick and grid:
    flip off (digits are not mirror-symmetric), Adam at 1e-3 without weight decay, 4 epochs (learns
    ResNet50 from scratch where SGD at 0.01 does not); quick also augment off, the grid leaves it to
    its cells. parity: the improved SGD at a constant rate, --arch resnet50_v1_5, batch 32
    (`tlres.reference.parity` says why). Why each, measured: docs/presets.md#the-quick-preset.
    """
    if use not in RUNLOCAL_USES:
        raise ValueError(f"use must be one of {', '.join(RUNLOCAL_USES)}, got {use!r}")
    if not runlocal:
        return {}
    values = dict(data="digits", weights="none")
    if use in ("quick", "grid"):
        values.update(flip=False, optimizer="adam", lr=1e-3, weight_decay=0.0, epochs=4)
    if use == "quick":
        values.update(augment=False)
    if use == "parity":
        values.update(arch="resnet50_v1_5", schedule="constant", batch_size=32)
    return values


QUICK = IMPROVED.replace(preset="quick", **get_config(runlocal=True))
"""A real, short run of the same pipeline on scikit-learn's digits, offline (`get_config`)."""

EXECUTION_FIELDS = tuple(f.name for f in dataclasses.fields(Config) if f.metadata["half"] == EXECUTION)
"""How a run is executed, not what it computes: where it writes (out), the compile cache,
checkpointing, how processes join (num_processes ... coordinator_timeout), where the jax pipeline
builds its batches (data_on_device: the same batches either way, tests/data/test_device_data.py),
the convolution kernels (conv) and the curves it logs for TensorBoard (tensorboard, tensorboard_every).
A grid reuses a finished run that differs only in these, and `report` and `compare` leave them out
of the settings they compare. Why conv is here and precision, pipeline and data_parallel are not,
measured: docs/reproducibility.md#convolution-kernels-and-what-a-run-computes."""

DISTRIBUTED = ("num_processes", "process_id", "coordinator", "cluster", "coordinator_bind",
               "wildcard_bind", "run_token", "coordinator_timeout")
"""The fields that say how this process joins the others: per process, so a resumed run takes
them from its command line, not from config.json (`tlres.run.distributed`)."""

SECRET = ("run_token",)
"""Fields never written to a run directory (`public`)."""


def public(cfg):
    """`cfg` as a run directory records it: the `SECRET` fields blanked."""
    return cfg.replace(**{name: None for name in SECRET})


def halves(settings):
    """{"computes": {...}, "execution": {...}}: a run's settings (a `Config`, or config.json's
    "config" of any tlres version) split as `EXECUTION_FIELDS` says; a field this version does
    not know counts as computed."""
    if not isinstance(settings, dict):
        settings = dataclasses.asdict(settings)
    return {COMPUTES: {k: v for k, v in settings.items() if k not in EXECUTION_FIELDS},
            EXECUTION: {k: v for k, v in settings.items() if k in EXECUTION_FIELDS}}


def differing(settings):
    """{"computes": [...], "execution": [...]}: the names of the settings that differ among
    `settings` (recorded configs, as for `halves`), per half, sorted; seed, preset and out aside."""
    split = [halves(c or {}) for c in settings]
    out = {}
    for half in (COMPUTES, EXECUTION):
        keys = sorted(set().union(*(h[half] for h in split)) - {"seed", "preset", "out"})
        out[half] = [k for k in keys if len({repr(h[half].get(k)) for h in split}) > 1]
    return out


FOUR_SWITCHES = ("weights", "augment", "label_smoothing", "schedule")
"""The paper's four improvements, each an independent Config field."""

BASELINE = IMPROVED.replace(
    preset="baseline",
    weights="none",
    augment=False,
    label_smoothing=0.0,
    schedule="constant",
)
"""The paper's "original ResNet50", as tlres defines it.

The paper does not define its baseline exactly. tlres defines it as `IMPROVED`
with the four improvements switched off and everything else identical:
random initialisation instead of ImageNet weights (weights="none"), no flip or
crop, normalization only (augment=False), plain cross-entropy
(label_smoothing=0.0) and a constant learning rate (schedule="constant").
Each of the four is an independent switch (`FOUR_SWITCHES`).
"""

PRETRAIN = IMPROVED.replace(
    preset="pretrain",
    data="fashion-mnist",
    weights="none",
    optimizer="adam",
    lr=1e-3,
    weight_decay=0.0,
    epochs=5,
)
"""A source model for offline transfer: ResNet50 from scratch on Fashion-MNIST.

ImageNet weights cannot be had offline, so transfer is made real by pretraining on
a large real dataset (Fashion-MNIST: 60,000 training images, 10 classes, Debian's
``dataset-fashion-mnist``) and fine-tuning on a small one with
``--weights RUN_DIR`` (the run's ``model.keras`` backbone, new head). The recipe is
the improved preset's (flip, pad-4 crop, paper label smoothing, per-epoch cosine),
with the quick preset's Adam at 1e-3, which learns ResNet50 from scratch where SGD
at 0.01 is slow to start. 5 epochs: see experiments/results for the measured curve.
"""

PHOTOS = IMPROVED.replace(
    preset="photos",
    data="photos",
    image_size=224,
    input_norm="caffe",
    crop_padding=28,
)
"""The recipe tlres recommends for a folder of your own photos (``photos/<class>/``).

The improved recipe, with ImageNet weights fed what they were trained on: ImageNet's own 224 px
(``--image-size 224``) and Keras' "caffe" normalization (``--input-norm caffe``); the paper's
pad-4 crop of 32 px scaled to 224 px (``--crop-padding 28``, the same eighth of a side). No
option beyond the paper is on: none helped on the offline transfer grid (docs/options.md);
docs/presets.md gives the time per epoch.
"""

PRESETS = {"improved": IMPROVED, "baseline": BASELINE, "quick": QUICK, "pretrain": PRETRAIN,
           "photos": PHOTOS}


def preset(name):
    if name not in PRESETS:
        raise TlresError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]
