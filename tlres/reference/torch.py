"""The paper's recipe in PyTorch/torchvision, on tlres' data, flags and run-directory layout.

    tlres torch --preset quick --out runs/torch-quick

Takes `tlres train`'s flags (`tlres.commands.torch`) plus --limit-train, --limit-test, --device
and --draws, and writes the same run directory (`tlres.run.rundir.RunDir`, with "framework":
"pytorch" and model.pt), so `tlres.analysis.results` reads both alike. What each setting means in
PyTorch, the weights it takes (--weights, --init) and what it refuses (one line, exit 2):
docs/pytorch.md, "The PyTorch reference runner".
"""

import dataclasses
import functools
import os
import time

import numpy as np

from tlres.data import pipeline
from tlres.net import convert, model as model_lib
from tlres.net import weights as weights_lib
from tlres.run import curves, evaluate, records, rundir, writes
from tlres.data import loaders as tdata
from tlres.core.config import halves, public, randaugment_ops
from tlres.core.errors import TlresError, brief

PROG = "tlres torch"  # its command's name there (`tlres.commands.torch`)


def check_supported(cfg, draws="torch"):
    """Refuse settings the reference does not implement, before anything is created."""
    if cfg.input_norm != "paper":
        raise TlresError(f"--input-norm {cfg.input_norm}: the PyTorch reference implements only "
                         "paper (Normalize(0.5, 0.5))")
    if cfg.precision != "float32":
        raise TlresError(f"--precision {cfg.precision}: the PyTorch reference runs float32 only")
    if cfg.data_parallel:
        raise TlresError("--data-parallel: the PyTorch reference runs on one device only")
    if cfg.weights not in IMAGENET + ("none",) and torch_weights_path(cfg.weights).endswith(".keras"):
        keras_state(torch_weights_path(cfg.weights), cfg.weights)  # a Keras v1 model: one line now
    if cfg.arch == "tiny" and cfg.weights in IMAGENET:
        raise TlresError("--arch tiny has no ImageNet weights; use --weights none")
    for name in ("epochs", "batch_size", "lr", "image_size"):
        if not getattr(cfg, name) > 0:
            raise TlresError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    check_options(cfg, draws)


def check_options(cfg, draws="torch"):
    """Refuse the options beyond the paper the reference cannot run as asked (no file is read:
    the crosscheck checks them before it trains, even when every run is reused)."""
    if cfg.warmup_epochs >= cfg.epochs:
        raise TlresError(f"--warmup-epochs {cfg.warmup_epochs} must be fewer than --epochs {cfg.epochs}: "
                         "--schedule runs over the epochs after the warmup")
    drawn = [f for f in ("randaugment", "mixup", "cutmix") if getattr(cfg, f)]
    if draws == "tlres" and drawn:
        raise TlresError(f"--{'/--'.join(drawn)} with --draws tlres: tlres' shared batches carry its "
                         "flips and crops only, and Keras' and torchvision's layers draw and define "
                         "these differently (docs/options.md); use --draws torch")


MODEL_FILE = rundir.MODEL_PT
IMAGENET = ("imagenet", "torchvision")  # both: torchvision's IMAGENET1K_V1
TORCH_FILES = (".pt", ".pth", ".safetensors")


def torch_weights_path(weights):
    """A run directory's model.pt (else its model.keras), or a .pt/.pth/.safetensors/.keras file;
    one line otherwise."""
    path = weights
    if os.path.isdir(weights):
        path = rundir.RunDir(weights).model_pt
        if not os.path.isfile(path):
            path = rundir.RunDir(weights).model_keras
        if not os.path.isfile(path):
            raise TlresError(f"--weights {weights}: no {MODEL_FILE} or {rundir.MODEL_KERAS} there (a finished "
                             "PyTorch reference or tlres run writes one)")
    if not path.endswith(TORCH_FILES + (".keras",)) or not os.path.isfile(path):
        raise TlresError(f"--weights {weights}: the PyTorch reference takes imagenet, torchvision, none, "
                         "a finished run's directory (PyTorch reference, or tlres --arch resnet50_v1_5 "
                         "or tiny), a .pt/.pth/.safetensors state dict or such a tlres .keras model")
    return path


def read_state(weights):
    """{name: tensor} from the file `torch_weights_path` finds; a .keras model is converted."""
    import torch

    path = torch_weights_path(weights)
    if path.endswith(".keras"):  # a tlres run: --arch resnet50_v1_5 (torchvision's layout) or tiny
        return {k: torch.from_numpy(v) for k, v in keras_state(path, weights).items()}
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:
            raise TlresError(f"--weights {weights}: not a readable safetensors file "
                             f"({brief(e)})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle of anything but tensors, truncated file (type only: as convert.read_state_dict)
        raise TlresError(f"--weights {weights}: not a readable state dict ({type(e).__name__})") from None
    if not isinstance(state, dict):
        raise TlresError(f"--weights {weights}: holds a {type(state).__name__}, not a state dict")
    return state


def keras_state(path, weights):
    """A tlres --arch resnet50_v1_5 (or tiny) model file's backbone as a torch state dict (numpy)."""
    return _keras_state(path, weights, os.stat(path).st_mtime_ns)


@functools.lru_cache(maxsize=1)  # checked before the data loads, then used by build: read once
def _keras_state(path, weights, mtime):
    return convert.to_torch(weights_lib.saved_backbone(path, weights), weights)


def load_backbone(model, weights):
    """Every tensor of a saved state dict except the classifier (fc.*): the head stays new."""
    head = head_prefix(model)
    state = {k: v for k, v in read_state(weights).items() if not k.startswith(head)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(head)}
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise TlresError(f"--weights {weights}: does not fit this --arch (its tensors differ in names "
                         "or shapes); train the source with the same --arch")
    model.load_state_dict(state, strict=False)


def load_init(model, path):
    """Load a complete state dict (head included) from `path`; returns the file's sha256."""
    import torch

    if not os.path.isfile(path):
        raise TlresError(f"--init {path}: no such file")
    state = convert.read_state_dict(path, path)
    own = model.state_dict()
    if set(state) != set(own) or any(tuple(state[k].shape) != tuple(own[k].shape) for k in own):
        raise TlresError(f"--init {path}: does not fit this --arch and class count (its tensors "
                         "differ in names or shapes)")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return convert.file_sha256(path)


def build(cfg, num_classes):
    """The torch model for cfg: architecture, weights, BatchNorm settings."""
    import torch
    import torchvision

    if cfg.arch == "tiny":  # mirrors tlres.net.model.tiny_backbone + GAP + Dense, padding included
        layers, cin = [], 3
        for w in (8, 16, 32):
            layers += [KerasSamePad(3, 2), torch.nn.Conv2d(cin, w, 3, 2, 0, bias=False),
                       torch.nn.BatchNorm2d(w), torch.nn.ReLU()]
            cin = w
        model = torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                    torch.nn.Linear(cin, num_classes))
    else:
        weights = None
        if cfg.weights in IMAGENET:
            weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1
        try:
            model = torchvision.models.resnet50(weights=weights)
        except Exception as e:  # offline: one clear line, never silently random weights
            cache = os.path.join(torch.hub.get_dir(), "checkpoints")
            raise TlresError(f"torchvision ImageNet weights {os.path.basename(weights.url)} are not in "
                             f"{cache} and could not be downloaded ({brief(e)}); put the "
                             f"file there or use --weights none") from None
        model.fc = torch.nn.Linear(2048, num_classes)
    if cfg.weights not in IMAGENET + ("none",):
        load_backbone(model, cfg.weights)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum, m.eps = 1.0 - cfg.bn_momentum, cfg.bn_epsilon
    return model


def KerasSamePad(kernel, stride):
    """Keras' (TensorFlow's) padding="same": total max((ceil(n/s)-1)*s + k - n, 0), the odd pixel
    at the bottom/right; torch's Conv2d(padding=1) pads both sides, a different function."""
    import torch

    class SamePad(torch.nn.Module):
        def forward(self, x):
            h, w = x.shape[-2:]
            ph = max((-(-h // stride) - 1) * stride + kernel - h, 0)
            pw = max((-(-w // stride) - 1) * stride + kernel - w, 0)
            return torch.nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))

    return SamePad()


def eq11_loss(logits, labels, num_classes, eps, reduction="mean"):
    """The paper's eq. 11: 1-eps on the true class, eps/(C-1) on each other. `labels` are class
    indices or soft targets t (MixUp, CutMix): q = t(1-eps) + (1-t)eps/(C-1), affine in t as the
    one-hot form is, so a mixed target smooths to the mix of the smoothed targets."""
    import torch

    t = labels if labels.dim() == 2 else torch.nn.functional.one_hot(labels, num_classes)
    t = t.to(logits.dtype)
    q = t * (1.0 - eps) + (1.0 - t) * (eps / (num_classes - 1))
    per = -(q * torch.log_softmax(logits, 1)).sum(1)
    return per.mean() if reduction == "mean" else per


def criterion(cfg, num_classes):
    """(logits, labels) -> per-example loss tensor, the training criterion of cfg; labels are class
    indices or soft targets (torch's CrossEntropyLoss smooths those as t(1-eps) + eps/C, Keras' form)."""
    import torch

    if cfg.smoothing_form == "keras":
        ce = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction="none")
        return lambda z, y: ce(z, y)
    return lambda z, y: eq11_loss(z, y, num_classes, cfg.label_smoothing, reduction="none")


def make_optimizer(cfg, params):
    """(torch optimizer, decoupled decay to apply by hand before each step, or 0)."""
    import torch

    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=0.0), \
            cfg.weight_decay
    if cfg.optimizer in ("adam", "adamw"):
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-7), 0.0
    raise TlresError(f"unknown optimizer {cfg.optimizer!r}")


def optimizer_step(opt, decay):
    """One update; `decay` > 0 applies Keras' decoupled weight decay first (w <- w - lr*wd*w) to
    the parameters the step updates (those with a gradient)."""
    import torch

    if decay:
        with torch.no_grad():
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:  # as torch's optimizers: a frozen parameter is left alone
                        p.mul_(1.0 - group["lr"] * decay)
    opt.step()


class LrClock:
    """When a scheduler steps: after each of the first `per_step` training steps, then at the end of
    each epoch that ends after them (per_step 0: per epoch; math.inf: per step throughout)."""

    def __init__(self, sched, per_step):
        self.sched, self.per_step, self.done = sched, per_step, 0

    def after_step(self):
        self.done += 1
        if self.sched is not None and self.done <= self.per_step:
            self.sched.step()

    def after_epoch(self):
        if self.sched is not None and self.done > self.per_step:
            self.sched.step()


def make_scheduler(cfg, opt, steps_per_epoch):
    """The `LrClock` of cfg's schedule. --warmup-epochs W: LinearLR from lr/Ws to lr over the Ws =
    W * steps_per_epoch first steps, then (SequentialLR) --schedule over the epochs after them."""
    import math

    import torch

    lrs = torch.optim.lr_scheduler
    warm, rest = cfg.warmup_epochs * steps_per_epoch, cfg.epochs - cfg.warmup_epochs
    main, per_step = None, math.inf
    if cfg.schedule == "cosine-epoch":
        main, per_step = lrs.CosineAnnealingLR(opt, T_max=rest, eta_min=cfg.lr_min), warm
    elif cfg.schedule == "cosine-step":
        main = lrs.CosineAnnealingLR(opt, T_max=rest * steps_per_epoch, eta_min=cfg.lr_min)
    if not warm:
        return LrClock(main, per_step)
    linear = lrs.LinearLR(opt, start_factor=1.0 / warm, total_iters=warm - 1)
    return LrClock(linear if main is None else lrs.SequentialLR(opt, [linear, main], [warm]), per_step)


def train_transform(cfg, size):
    """Per-image training transforms (torchvision v2), or None: flip and pad-crop with --augment,
    then --randaugment N,M as RandAugment(num_ops=N, magnitude=M) on the uint8 image."""
    from torchvision.transforms import v2

    steps = []
    if cfg.augment:
        if cfg.flip:
            steps.append(v2.RandomHorizontalFlip())
        if cfg.crop_padding:
            steps.append(v2.RandomCrop(size, padding=cfg.crop_padding))
    if cfg.randaugment:
        n, m = randaugment_ops(cfg.randaugment)
        steps.append(v2.RandAugment(num_ops=n, magnitude=m))
    return v2.Compose(steps) if steps else None


def batch_mix(cfg, num_classes):
    """The batch transform of --mixup/--cutmix (torchvision v2, soft targets out), or None; with
    both, RandomChoice: one of the two per batch, with probability 0.5 each."""
    from torchvision.transforms import v2

    mixes = ([v2.MixUp(alpha=cfg.mixup, num_classes=num_classes)] if cfg.mixup else []) + \
        ([v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes)] if cfg.cutmix else [])
    if len(mixes) < 2:
        return mixes[0] if mixes else None
    return v2.RandomChoice(mixes)


def head_prefix(model):
    """The state-dict prefix of the classifier: resnet50's fc, or the tiny Sequential's last layer."""
    return "fc." if hasattr(model, "fc") else f"{len(model) - 1}."


def set_backbone_frozen(model, frozen):
    """Freeze (or thaw) every parameter but the head's; frozen, the backbone's BatchNorm layers
    run in eval mode, their statistics frozen too (Keras' trainable=False). After model.train()."""
    import torch

    head = head_prefix(model)
    for name, p in model.named_parameters():
        if not name.startswith(head):
            p.requires_grad_(not frozen)
    for name, m in model.named_modules():
        if frozen and isinstance(m, torch.nn.BatchNorm2d) and not name.startswith(head):
            m.eval()


def make_ema(cfg, model):
    """--ema DECAY: an AveragedModel of `model`'s parameters (not its buffers, as Keras' optimizer
    EMA averages trainable variables only); its first update copies the weights, as Keras'. None
    when off."""
    if not cfg.ema:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=False)


def evaluated(model, ema):
    """The network evaluation, predictions and model.pt use: with --ema the averaged parameters
    with the live model's buffers (BatchNorm statistics, which Keras does not average either);
    AveragedModel syncs them at each update, copied again here for any forward pass since."""
    import torch

    if ema is None:
        return model
    with torch.no_grad():
        for mine, live in zip(ema.module.buffers(), model.buffers()):
            mine.copy_(live)
    return ema.module


def run(cfg, limit_train=None, limit_test=None, device=None, overwrite=False, verbose=True,
        draws="torch", init=None):
    """Train and evaluate cfg in PyTorch; returns the run directory (`tlres.run.rundir`'s layout)."""
    import torch
    import torchvision  # noqa: F401  before a Keras source runs JAX: torchvision imported after can crash

    check_supported(cfg, draws)
    out = rundir.RunDir(rundir.default_out(cfg))
    rundir.check_out(out.path, overwrite)
    curves.check(cfg, out.path, curves.PYTORCH, overwrite)
    dev = torch_device(device)
    t0 = time.perf_counter()
    ds = tdata.load(cfg.data, cfg.data_dir, cfg.image_size, cfg.test_split, cfg.skip_bad_images)
    xtr, ytr = ds.x_train[:limit_train], ds.y_train[:limit_train]
    xte, yte = ds.x_test[:limit_test], ds.y_test[:limit_test]
    if len(xtr) < cfg.batch_size:
        raise TlresError(f"--data {cfg.data}: the training split has {len(xtr)} images, fewer "
                         f"than one batch of {cfg.batch_size}; lower --batch-size")
    C = ds.num_classes
    torch.manual_seed(cfg.seed)
    model = build(cfg, C)  # raises before the run directory exists
    init_sha = load_init(model, init) if init else None
    model = model.to(dev)
    out.create()
    out.write_running()
    out.write_config({
        "framework": "pytorch",
        "config": dataclasses.asdict(public(cfg).replace(out=out.path)),  # no run token
        **halves(public(cfg).replace(out=out.path)),
        "dataset": {"name": ds.name, "num_train": len(xtr), "num_test": len(xte),
                    "num_classes": C, "class_names": list(ds.class_names)},
        "reference": {"limit_train": limit_train, "limit_test": limit_test, "draws": draws,
                      "init_sha256": init_sha},
        "versions": records.versions("pytorch"), "device": records.torch_device(dev)})
    try:
        log = curves.start(cfg, out.path, curves.PYTORCH)
        return _train(cfg, out, model, dev, (xtr, ytr, xte, yte), ds.class_names, t0, verbose, draws, log)
    except BaseException as e:
        out.write_failed(e)
        raise


def torch_device(device):
    """The torch device `device` names (None: cuda if available, else cpu), checked usable."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available")
        torch.empty(1, device=dev)
    except (RuntimeError, ValueError) as e:
        raise TlresError(f"--device {device}: not usable here ({brief(e)})") from None
    return dev


def tlres_batches(cfg, x, y, start_epoch=0, end_epoch=None):
    """tlres' `--pipeline jax` training batches as torch tensors (NCHW float32, int64 labels):
    the same order, flips, crop offsets and normalization, computed by tlres' own code."""
    import torch

    for xb, yb in pipeline.jax_batches(x, y, cfg, start_epoch, cfg.epochs if end_epoch is None else end_epoch):
        yield (torch.from_numpy(np.array(xb)).permute(0, 3, 1, 2).contiguous(),
               torch.from_numpy(np.asarray(yb, np.int64)))


def train_step(model, opt, decay, loss_of, x, y):
    """One training step on a batch; returns (mean loss, logits)."""
    logits = model(x)
    loss = loss_of(logits, y).mean()
    opt.zero_grad()
    loss.backward()
    optimizer_step(opt, decay)
    return loss, logits


def _train(cfg, out, model, dev, arrays, class_names, t0, verbose, draws="torch", log=curves.Off()):
    """Train `cfg.epochs` epochs, each validated on the whole test split (history.csv; `log`: the
    curves, `tlres.run.curves`), then write predictions.csv, model.pt, metrics.json and status
    "finished"; returns the path."""
    import torch

    xtr, ytr, xte, yte = arrays
    C = len(class_names)
    x_test = _normalized(_to_float(xte))
    opt, decay = make_optimizer(cfg, model.parameters())
    clock = make_scheduler(cfg, opt, len(xtr) // cfg.batch_size)
    ema = make_ema(cfg, model)
    if ema is not None and verbose:
        print(f"tlres.reference.torch: evaluation, predictions.csv and {MODEL_FILE} use the "
              f"exponential moving average of the weights (decay {cfg.ema})", flush=True)
    loss_of = criterion(cfg, C)
    eval_loss = lambda y, z: loss_of(torch.from_numpy(np.asarray(z, np.float32)),
                                     torch.from_numpy(np.asarray(y, np.int64))).numpy()
    batches = _batches(cfg, xtr, ytr, draws, C)
    history, t_fit = [], time.perf_counter()
    for epoch in range(cfg.epochs):
        start, lr = time.perf_counter(), opt.param_groups[0]["lr"]
        tot, correct, seen = _train_epoch(cfg, epoch, (model, ema, opt, decay, clock, loss_of),
                                          batches(epoch), dev, (log, len(xtr) // cfg.batch_size))
        clock.after_epoch()
        seconds = time.perf_counter() - start
        net = evaluated(model, ema)
        logits = _logits(net, x_test, dev)
        m = evaluate.metrics(logits, yte, C, eval_loss,
                             evaluate.criterion(cfg.label_smoothing, cfg.smoothing_form))
        if not np.isfinite(tot):
            raise TlresError(f"non-finite training loss at epoch {epoch + 1}; lower --lr")
        history.append({"epoch": epoch + 1, "loss": tot / seen, "accuracy": correct / seen,
                        "val_loss": m["loss"], "val_accuracy": m["accuracy"],
                        "val_mean_class_accuracy": m["mean_class_accuracy"], "lr": lr,
                        "seconds": round(seconds, 3)})
        out.write_history(history)
        log.epoch(history[-1])
        if verbose:
            print(f"tlres.reference.torch: epoch {epoch + 1}/{cfg.epochs} " + " ".join(
                f"{k} {v:.4f}" for k, v in history[-1].items() if k != "epoch"), flush=True)
    m.update(epochs=cfg.epochs, class_names=list(class_names))
    return _finish(cfg, out, net, m, logits, yte, time.perf_counter() - t_fit, t0, verbose)


def _train_epoch(cfg, epoch, state, batches, dev, curve):
    """One epoch's training steps, the backbone frozen in the first --freeze-backbone-epochs, the
    EMA and the schedule updated after each step; (summed loss, correct, seen). `state`: (model,
    ema, optimizer, decay, LrClock, loss); `curve`: (the curves, steps per epoch), for the
    running mean loss per step.
    A soft target's class is its largest weight."""
    model, ema, opt, decay, clock, loss_of = state
    log, steps = curve
    model.train()
    set_backbone_frozen(model, epoch < cfg.freeze_backbone_epochs)
    tot, correct, seen = 0.0, 0, 0
    for x, y in batches:
        x, y = x.to(dev), y.to(dev)
        loss, logits = train_step(model, opt, decay, loss_of, x, y)
        if ema is not None:
            ema.update_parameters(model)
        clock.after_step()
        tot += loss.item() * len(y)
        correct += int((logits.argmax(1) == (y if y.dim() == 1 else y.argmax(1))).sum())
        seen += len(y)
        log.step(epoch * steps + seen // cfg.batch_size, lambda: tot / seen)
    return tot, correct, seen


def _nchw(x):
    """uint8 NHWC images as a uint8 NCHW tensor (a view)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


def _to_float(x):
    """uint8 NHWC images as float32 NCHW in [0, 1]."""
    return _nchw(x).float() / 255.0


def _normalized(x):
    return (x - 0.5) / 0.5  # Normalize(0.5, 0.5) on [0, 1] pixels


def _logits(model, x, dev):
    """The model's logits for `x` in inference mode, 256 images at a time, as numpy."""
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + 256].to(dev)).float().cpu()
                          for i in range(0, len(x), 256)]).numpy()


def _batches(cfg, xtr, ytr, draws, num_classes):
    """epoch -> that epoch's training batches (normalized, NCHW): tlres' own with --draws tlres
    (one stream over all epochs), else the (seed, epoch) order, sorted within a batch, with
    torchvision's per-image transforms on uint8 and --mixup/--cutmix on the batch (soft targets)."""
    import torch

    bs, steps = cfg.batch_size, len(xtr) // cfg.batch_size
    if draws == "tlres":
        shared = tlres_batches(cfg, xtr, ytr)

        def shared_batches(epoch):
            for _ in range(steps):
                yield next(shared)

        return shared_batches
    x_train = _nchw(xtr)
    y_train = torch.from_numpy(np.asarray(ytr, np.int64))
    tf, mix = train_transform(cfg, x_train.shape[-1]), batch_mix(cfg, num_classes)

    def epoch_batches(epoch):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(xtr))
        for b in range(steps):
            idx = torch.from_numpy(np.sort(order[b * bs:(b + 1) * bs]))
            x = x_train[idx]
            if tf is not None:
                x = torch.stack([tf(im) for im in x])
            x, y = _normalized(x.float() / 255.0), y_train[idx]
            yield (x, y) if mix is None else mix(x, y)

    return epoch_batches


def _finish(cfg, out, model, m, logits, yte, fit_seconds, t0, verbose):
    """predictions.csv, model.pt, metrics.json, status "finished", and the result in one line."""
    import torch

    out.write_predictions(logits, yte)
    writes.atomic(out.model_pt, lambda f: torch.save(model.state_dict(), f))
    out.write_metrics(m)
    out.write_finished(cfg.epochs, 0, fit_seconds, time.perf_counter() - t0)
    if verbose:
        lo, hi = m["accuracy_ci95"]
        print(f"tlres.reference.torch: test accuracy {m['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}, "
              f"n={m['num_test']}), loss {m['loss']:.4f}; {fit_seconds:.0f} s training -> {out.path}",
              flush=True)
    return out.path
