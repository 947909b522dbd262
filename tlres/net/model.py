"""ResNet50 backbone + global average pooling + a new Dense head.

As in the paper (eq. 2, ``model.fc = nn.Linear(2048, 10)``): the ImageNet
classifier is dropped and replaced by one Dense layer with as many outputs as
the data has classes; every layer is trained.

Two ResNet50s: `--arch resnet50` is Keras' (`keras.applications.ResNet50`,
ResNet v1: stride 2 on the first 1x1 convolution of a downsampling block,
Keras' ImageNet weights); `--arch resnet50_v1_5` is torchvision's
(`tlres.net.resnet_v15`: stride on the 3x3, the network the paper trained, weights
from torchvision/timm files via `tlres.net.convert`). Their ImageNet weights belong
to different networks and are not interchangeable.
"""

import dataclasses
import json
import os
import time
import weakref

import numpy as np

from tlres.data import loaders as data
from tlres.net import convert, resnet_v15
from tlres.net.cpu import convplan, kernels
from tlres.core.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, Config
from tlres.core.errors import TlresError, brief, human, quote
from tlres.net.resnet_v15 import NAME as V15

MODEL_FILE = "model.keras"  # what a finished run leaves: the whole model, Keras' native format
METADATA_FILE = "tlres.json"  # inside model.keras: preprocessing and class names (Keras ignores it)
IMAGENET_NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_NOTOP


def imagenet_weights_path():
    """Where Keras' `get_file` caches the ResNet50 ImageNet (no-top) weights."""
    from keras.src.backend import config

    return os.path.join(config.keras_home(), "models", IMAGENET_NOTOP)


def weights_unavailable(weights, arch="resnet50"):
    """Why `--weights` cannot be had here, with the fix, or None if it can (checked without
    loading anything: the runner asks before it loads the data, to name every missing input at once).

    'imagenet' is the ImageNet weights of `arch`'s own network: Keras' file for
    resnet50, torchvision's (= 'torchvision') for resnet50_v1_5.
    """
    if weights == "none":
        return None
    if weights == "torchvision" or (weights == "imagenet" and arch == V15):
        if arch != V15:
            return (f"--weights torchvision: torchvision's ResNet50 weights are v1.5 and fit --arch "
                    f"{V15}, not --arch {arch} (whose ImageNet weights are --weights imagenet)")
        if not convert.torch_available():
            return (f"--weights {weights}: torchvision's {convert.TORCHVISION_FILE} is a torch file and "
                    "needs PyTorch (pip install torch); or save its state dict as .safetensors and "
                    "pass that path")
        path = convert.torchvision_weights_path()
        if os.path.exists(path):
            return None
        if not data.reachable("download.pytorch.org"):
            return (f"torchvision's ImageNet weights for ResNet50 ({convert.TORCHVISION_FILE}) are not "
                    f"in torch's hub cache ({os.path.dirname(path)}) and the download host is "
                    f"unreachable: copy {convert.TORCHVISION_URL} to that folder (or set TORCH_HOME), "
                    "or run with --weights none")
        return None
    if weights == "imagenet":
        if arch == "tiny":
            return "--arch tiny has no ImageNet weights; use --weights none"
        path = imagenet_weights_path()
        if os.path.exists(path):
            return None
        if not data.reachable("storage.googleapis.com"):
            return (f"ImageNet weights for ResNet50 are not in Keras' cache ({path}) and the download "
                    f"host is unreachable: copy {IMAGENET_URL} to that path, or run with --weights none")
        return None
    if os.path.isdir(weights):
        if not os.path.isfile(os.path.join(weights, MODEL_FILE)):
            return (f"--weights {weights}: no {MODEL_FILE} in that folder (a finished tlres run writes "
                    "one; a failed or running run has none yet)")
        return None
    if not os.path.isfile(weights):
        return (f"--weights {weights}: no such file or run directory (expected imagenet, torchvision, "
                "none, a finished run's directory, a .keras model, a .weights.h5 file or a torch "
                "state dict: .safetensors, .pth, .pt)")
    if weights.endswith(convert.TORCH_FILES):
        if arch not in (V15, "tiny"):
            return (f"--weights {weights}: a torch state dict holds torchvision's ResNet50 layout "
                    f"(v1.5), which fits --arch {V15}, not --arch {arch}")
        if not weights.endswith(".safetensors") and not convert.torch_available():
            return (f"--weights {weights}: reading a .pth/.pt file needs PyTorch (pip install torch); "
                    "a .safetensors file of the same state dict needs no torch")
    return None


def resolve_weights(weights, arch="resnet50"):
    """'imagenet' | 'torchvision' | 'none' | RUN_DIR | model.keras | .weights.h5 | a torch state
    dict (.safetensors, .pth, .pt) -> what `build` loads (or one line)."""
    problem = weights_unavailable(weights, arch)
    if problem:
        raise TlresError(problem)
    if weights == "none":
        return None
    if weights == "torchvision" or (weights == "imagenet" and arch == V15):
        path = convert.torchvision_weights_path()
        # in torch's hub cache, or torch.hub downloads it, checks its hash prefix and caches it
        return path if os.path.exists(path) else "torchvision"
    if weights == "imagenet":
        path = imagenet_weights_path()
        # in the cache, or Keras downloads it, verifies the hash and caches it
        return path if os.path.exists(path) else "imagenet"
    if os.path.isdir(weights):
        return os.path.join(weights, MODEL_FILE)
    return weights


def build(num_classes, cfg):
    """The classifier for `cfg`: weights, BatchNorm settings and input size applied."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    weights = resolve_weights(cfg.weights, cfg.arch)
    shape = (cfg.image_size, cfg.image_size, 3)
    if cfg.arch == "tiny":
        backbone = tiny_backbone(shape)
    elif cfg.arch == resnet_v15.NAME:
        backbone = resnet_v15.resnet50_v1_5(shape)
    else:
        backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=shape)
    for layer in backbone.layers:  # PyTorch fidelity: read at call time, so set before tracing
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum, layer.epsilon = cfg.bn_momentum, cfg.bn_epsilon
    inputs = keras.Input((cfg.image_size, cfg.image_size, 3), name="image")
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone(inputs))
    logits = keras.layers.Dense(num_classes, name="head", dtype="float32")(features)
    model = keras.Model(inputs, logits, name="tlres_resnet50")
    apply_conv(model, cfg.conv, cfg.batch_size)
    if weights == "imagenet":
        # Let Keras fetch and verify the file into its cache, then load it.
        keras.applications.ResNet50(include_top=False, weights="imagenet",
                                    input_shape=(cfg.image_size, cfg.image_size, 3))
        weights = imagenet_weights_path()
    if weights == "torchvision":
        weights = convert.download_torchvision_weights()
    if weights is None:
        pass
    elif weights.endswith(".keras"):
        load_backbone(backbone, weights, cfg.weights, cfg.arch)
    elif weights.endswith(convert.TORCH_FILES):
        convert.from_torch(backbone, convert.read_state_dict(weights, cfg.weights), cfg.weights, cfg.arch)
    else:
        _load(model, backbone, weights, cfg.weights, cfg.arch)
    return model


def load_backbone(backbone, path, flag, arch="resnet50"):
    """Copy the backbone of a saved tlres model (`model.keras`) into `backbone`.

    The transfer step of the recipe, with a model of your own as the source: like
    --weights imagenet, only the backbone is taken and the head stays new, whatever
    the source's classes were.
    """
    source = saved_backbone(path, flag)
    found = [w.shape for w in source.weights]
    wanted = [w.shape for w in backbone.weights]
    if found != wanted:
        raise TlresError(f"--weights {flag}: does not fit --arch {arch}: its backbone {source.name!r} "
                         f"has {len(found)} weights, not the {len(wanted)} of --arch {arch}'s backbone; "
                         "train the source with the same --arch")
    backbone.set_weights(source.get_weights())


def saved_backbone(path, flag):
    """The backbone (the one nested Keras model) of a tlres model file, read with Keras' safe_mode
    (no code runs); one line if the file is unreadable or has no single backbone."""
    import keras

    source = load_keras(path, f"--weights {flag}")
    inner = [l for l in source.layers if isinstance(l, keras.Model)]
    if len(inner) != 1:
        raise TlresError(f"--weights {flag}: does not fit: it has no single backbone model inside "
                         "(a tlres model file has one)")
    return inner[0]


KERAS_MEMBERS = {"metadata.json": 2 ** 20, "config.json": 2 ** 20, "model.weights.h5": 2 ** 30,
                 "model.weights.npz": 2 ** 30, METADATA_FILE: 2 ** 20}
"""The members a .keras file of a tlres model may have, and the most each may declare: a
ResNet50's config.json is 0.17 MB and its weights 95 MB (docs/bad-input.md), so each
limit is over 5x what tlres writes."""
MAX_EXPANSION = 100  # a member over 1 MiB declaring 100x its stored bytes is a zip bomb (tlres stores)


def load_keras(path, label):
    """A .keras model file read as untrusted: `check_keras_file` first, then Keras' loader
    with safe_mode (no code runs), its temporary files in a folder of ours that is removed
    afterwards whatever happens (Keras extracts members to TMPDIR and may leave an empty
    folder there on an error). One line, prefixed `label`, when it cannot be read."""
    import tempfile

    import keras

    check_keras_file(path, label)
    with tempfile.TemporaryDirectory(prefix="tlres-keras-", ignore_cleanup_errors=True) as tmp:
        saved, tempfile.tempdir = tempfile.tempdir, tmp
        try:
            return keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as e:  # not a Keras file, truncated, unknown layers
            raise TlresError(f"{label}: not a readable Keras model ({brief(e)})") from e
        finally:
            tempfile.tempdir = saved


def check_keras_file(path, label):
    """Refuse a .keras zip whose members are not `KERAS_MEMBERS`, declare more than their
    limits or `MAX_EXPANSION` x their stored size, or whose config.json gives an input over
    `config.MAX_IMAGE_SIZE` pixels: before Keras reads a byte of them."""
    import zipfile

    config = None
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                limit = KERAS_MEMBERS.get(info.filename)
                if limit is None:
                    raise TlresError(f"{label}: member {quote(info.filename)} is not one Keras or tlres "
                                     f"writes ({', '.join(KERAS_MEMBERS)}); not a tlres model file")
                if max(info.file_size, info.compress_size) > limit or (info.file_size > 2 ** 20
                                              and info.file_size > MAX_EXPANSION * info.compress_size):
                    raise TlresError(f"{label}: its {info.filename} declares {human(info.file_size)} "
                                     f"({human(info.compress_size)} stored); a tlres model's is under "
                                     f"{human(limit)}")
            if "config.json" in z.namelist():
                config = json.loads(z.read("config.json"))
    except TlresError:
        raise
    except Exception as e:  # BadZipFile, OSError, JSON errors, RecursionError, encrypted members
        raise TlresError(f"{label}: not a readable Keras model ({brief(e)})") from e
    if config is not None:
        _check_input_shapes(label, config)


SHAPE_KEYS = ("batch_shape", "batch_input_shape", "input_shape")


def _check_input_shapes(label, node, depth=0):
    """Every image shape (4 dimensions) under `SHAPE_KEYS` in a Keras config: height and width
    at most MAX_IMAGE_SIZE, so a crafted input size cannot make Keras allocate terabytes."""
    if depth > 200:
        raise TlresError(f"{label}: its config.json is nested over 200 levels deep; not a tlres model")
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if key in SHAPE_KEYS and isinstance(value, list) and len(value) == 4:
            for dim in value[1:3]:
                if dim is not None and not (type(dim) is int and 0 < dim <= MAX_IMAGE_SIZE):
                    raise TlresError(f"{label}: its config.json gives an input of shape {value[:4]}; tlres "
                                     f"models take images of {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} pixels")
        else:
            _check_input_shapes(label, value, depth + 1)


def save(model, path, metadata=None):
    """Write `model` as a plain Keras model file: loadable without tlres.

    Rebuilt from its config, so the file holds Keras' own Conv2D layers (the
    `kernels.matmul_conv` kernel is an instance attribute and is not saved), no
    optimizer and no tlres loss: `keras.saving.load_model(path)` works anywhere.
    `metadata` (the run's preprocessing and class names) is stored as an extra
    `tlres.json` member of the .keras zip, which Keras ignores, so the file alone
    is enough for `tlres predict`.
    """
    import json
    import zipfile

    import keras

    plain = keras.Model.from_config(model.get_config())
    plain.set_weights(model.get_weights())
    plain.save(path)
    if metadata is not None:
        with zipfile.ZipFile(path, "a") as z:
            z.writestr(METADATA_FILE, json.dumps(metadata, indent=2) + "\n")


def read_metadata(path):
    """The `tlres.json` that `save` stored in a .keras file, or None (a bare Keras file)."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            if METADATA_FILE not in z.namelist():
                return None
            # tlres writes a few hundred bytes. Read in small chunks: z.read() asks the file
            # for the member's declared compressed size at once, and a file's read(n)
            # allocates n bytes first (a 274-byte zip could ask for 4 GiB)
            chunks, size = [], 0
            with z.open(METADATA_FILE) as f:
                while size <= 2 ** 20:
                    chunk = f.read(2 ** 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
            if size > 2 ** 20:
                raise TlresError(f"{path}: its {METADATA_FILE} is over 1 MiB; not tlres' record")
            meta = json.loads(b"".join(chunks))
    except TlresError:
        raise
    except Exception as e:  # BadZipFile, OSError, JSON errors, RecursionError; zipfile's
        # NotImplementedError (compression method, zip version) and RuntimeError (encrypted)
        raise TlresError(f"{path}: not a readable .keras file ({brief(e)})") from e
    if not _is_record(meta):
        raise TlresError(f"{path}: its {METADATA_FILE} is not tlres' record (preprocessing with input_norm "
                         "and class_names, evaluation with batch_size and conv)")
    return meta


def _is_record(meta):
    """The kinds `tlres predict` relies on, in a tlres.json from a file of unknown origin."""
    if not isinstance(meta, dict):
        return False
    pre, ev = meta.get("preprocessing") or {}, meta.get("evaluation") or {}
    if not (isinstance(pre, dict) and isinstance(ev, dict)):
        return False
    choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(Config)}
    names, batch = pre.get("class_names"), ev.get("batch_size")
    return ((names is None or isinstance(names, list) and all(isinstance(n, str) for n in names))
            and (batch is None or type(batch) is int and batch > 0)
            and pre.get("input_norm") in (None, *choices["input_norm"])
            and ev.get("conv") in (None, *choices["conv"]))


def tiny_backbone(shape):
    """Three conv-BN-ReLU blocks: the same plumbing as ResNet50 in a fraction of the time."""
    import keras
    from keras import layers

    inputs = keras.Input(shape)
    x = inputs
    for i, width in enumerate((8, 16, 32)):
        x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU()(x)
    return keras.Model(inputs, x, name="tiny")


def _load(model, backbone, path, flag, arch="resnet50"):
    """Load a backbone file (e.g. the ImageNet no-top .h5) or a whole-model file."""
    import warnings

    errors = []
    for target in (backbone, model):
        try:
            with warnings.catch_warnings():  # Keras warns, then keeps fresh weights, on a partial match
                warnings.simplefilter("error")
                target.load_weights(path)
            return
        except Exception as e:  # shape or layer-count mismatch, unreadable file
            errors.append(brief(e))
    raise TlresError(f"--weights {flag}: does not fit --arch {arch} (neither its backbone nor the "
                     f"whole tlres model): {errors[-1][:200]}")


# -- convolution kernels -------------------------------------------------------
#
# XLA:CPU's convolution is pathologically slow on the small feature maps a 32 px
# input leaves in ResNet50's later stages: a 3x3 "same" convolution of 64 maps of
# 2x2x256 takes ~54 ms forward (PyTorch/oneDNN: ~3 ms) and ~115 ms with its
# gradients on this project's 2-core AVX2 CPU. Written as zero-pad, gather the k*k
# shifted views (im2col) and one matmul (`tlres.net.cpu.kernels.matmul_conv`), it takes
# ~2.3 ms and ~7.6 ms. On large maps XLA's forward pass is faster (56x56x64, 3x3:
# 25 ms vs 69 ms). Which kernel wins a shape depends on the CPU, so on a CPU "auto"
# times both, forward plus gradients, for each distinct convolution of the model and
# keeps the faster (`tlres.net.cpu.convplan`: measured once per host and stack, cached beside
# the compile cache); on a GPU it is XLA's kernel (cuDNN). docs/speed.md has the figures;
# `tlres bench --conv-layers` measures them per layer on any machine.


def resolve_conv(conv):
    """'auto' -> 'measure' when JAX computes on the CPU (per-layer plan timed on the host; or
    the kernel TLRES_CONV_AUTO names), else 'xla' (cuDNN on a GPU); 'xla'/'matmul' as given."""
    if conv != "auto":
        return conv
    import jax

    if jax.default_backend() != "cpu":
        return "xla"
    if jax.process_count() > 1:  # every process must compile the same program; timings can differ
        return convplan.env_rule() or "matmul"
    return convplan.env_rule() or "measure"


def slice_pool_able(layer):
    return layer.padding == "valid" and layer.data_format == "channels_last"


def use_slice_pools(model, on=True):
    """Give the MaxPooling2D layers of `model` `kernels.slice_max_pool` (or, `on=False`, Keras' own);
    weights, names and files are unchanged. Returns how many use it."""
    import types

    import keras

    count = 0
    for layer in all_layers(model):
        if type(layer) is not keras.layers.MaxPooling2D:
            continue
        if on and slice_pool_able(layer):
            layer.call = types.MethodType(
                lambda self, x: kernels.slice_max_pool(x, self.pool_size, self.strides), layer)
            count += 1
        else:
            vars(layer).pop("call", None)
    return count


def matmul_able(layer):
    """Whether `kernels.matmul_conv` computes this Conv2D (all of tlres' do)."""
    return (layer.data_format == "channels_last" and tuple(layer.dilation_rate) == (1, 1)
            and getattr(layer, "groups", 1) == 1)


def use_matmul_convs(model, layers=None):
    """Give the Conv2D layers of `model` (nested models included; or just `layers`) the
    `kernels.matmul_conv` kernel, and every other Conv2D of `model` XLA's own.

    Only the computation changes: layers keep their weights, names, configs and
    saved format, so every weights file loads as before.
    """
    import types

    chosen = None if layers is None else {id(l) for l in layers}
    for layer in conv2d_layers(model):
        if matmul_able(layer) and (chosen is None or id(layer) in chosen):
            layer.convolution_op = types.MethodType(
                lambda self, x, kernel: kernels.matmul_conv(x, kernel, self.strides, self.padding), layer)
        else:
            vars(layer).pop("convolution_op", None)  # back to the class' (XLA's) kernel
    return model


def conv_shape(layer, batch_size):
    """The distinct-convolution description `tlres.net.cpu.convplan` keys and times: batch, input, kernel,
    filters, strides, padding, compute dtype."""
    _, h, w, c = layer.input.shape
    return {"batch": int(batch_size), "input": [int(h), int(w), int(c)],
            "kernel": [int(k) for k in layer.kernel_size], "filters": int(layer.filters),
            "strides": [int(s) for s in layer.strides], "padding": layer.padding,
            "dtype": str(layer.compute_dtype)}


def time_conv(shape, kernel, repeats):
    """Seconds per call of one convolution's forward plus gradients (input and kernel), jitted,
    `repeats` calls after the compiling one and one more: the measurement behind `--conv auto` on a CPU."""
    import jax
    import jax.numpy as jnp
    from keras import ops

    b, (h, w, c), (kh, kw) = shape["batch"], shape["input"], shape["kernel"]
    strides, padding = tuple(shape["strides"]), shape["padding"]
    rng = np.random.default_rng(0)  # numpy: no compilation per shape for the data
    x = jnp.asarray(rng.standard_normal((b, h, w, c), "float32"), shape["dtype"])
    k = jnp.asarray(rng.standard_normal((kh, kw, c, shape["filters"]), "float32") * 0.05, shape["dtype"])
    if kernel == "xla":
        def conv(x, k):
            return ops.conv(x, k, strides, padding)
    else:
        def conv(x, k):
            return kernels.matmul_conv(x, k, strides, padding)
    fn = jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.square(conv(x, k).astype("float32"))), argnums=(0, 1)))
    for _ in range(2):  # compiles, then one untimed call
        jax.block_until_ready(fn(x, k))
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x, k))
        out.append(time.perf_counter() - t0)
    return out


_RECORDS = weakref.WeakKeyDictionary()  # model -> how apply_conv chose its kernels


def apply_conv(model, conv, batch_size, cache_dir=None, time_fn=None):
    """Give each Conv2D of `model` the kernel `conv` ('auto', 'xla', 'matmul') means here, and
    return the record of it (`conv_plan_record`).

    'auto' on a CPU: per distinct convolution shape at `batch_size`, the faster kernel as
    timed on this host (`tlres.net.cpu.convplan.plan` with `time_fn`, default `time_conv`; cached in
    `cache_dir`, default beside the compile cache).
    """
    kind = resolve_conv(conv)
    layers = conv2d_layers(model)
    record = {"conv": conv, "resolved": kind}
    if kind == "measure":
        able = [l for l in layers if matmul_able(l)]
        shapes = [conv_shape(l, batch_size) for l in able]
        p = convplan.plan(shapes, time_fn or time_conv, cache_dir)
        matmul = [l for l, s in zip(able, shapes) if p["kernels"][convplan.shape_key(s)] == "matmul"]
        record.update(source=p["source"], cache_file=p["cache_file"], measured_now=p["measured_now"],
                      shapes={k: {**e, "layers": [l.name for l, s in zip(able, shapes)
                                                 if convplan.shape_key(s) == k]}
                              for k, e in p["shapes"].items()})
    else:
        matmul = layers if kind == "matmul" else []
        if conv != "auto":
            record["source"] = f"--conv {conv}"
        else:
            import jax

            if jax.default_backend() != "cpu":
                record["source"] = f"XLA's kernel on {jax.default_backend()}"
            elif convplan.env_rule():
                record["source"] = f"{convplan.ENV}={kind}"
            else:
                record["source"] = "several processes: the matmul form in every one (a plan timed in each could differ)"
    use_matmul_convs(model, matmul)
    record["slice_max_pools"] = use_slice_pools(model, kind != "xla")
    _RECORDS[model] = record
    return conv_plan_record(model)


def apply_recorded_plan(model, record):
    """Give `model` the kernels a run's `config.json` recorded (`conv_plan`) when they came from
    the host's timed plan (--conv auto on a CPU), so a resumed run keeps the kernels it started
    with even if the plan cache changed since; any other record changes nothing."""
    if not isinstance(record, dict) or record.get("resolved") != "measure":
        return None
    names = record.get("matmul_layers")
    layers = conv2d_layers(model)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) \
            or not set(names) <= {l.name for l in layers}:
        return None
    use_matmul_convs(model, [l for l in layers if l.name in names])
    pools = use_slice_pools(model)
    _RECORDS[model] = {**{k: v for k, v in record.items() if k not in ("matmul_layers", "xla_layers",
                                                                          "summary")},
                       "source": "recorded (the run's config.json)", "slice_max_pools": pools}
    return conv_plan_record(model)


def conv_plan_record(model):
    """Which of `model`'s convolutions use which kernel (as they are now), and how `apply_conv`
    chose them: --conv, the rule or (auto on a CPU) the timings per distinct shape and whether
    they were measured now or read from the cache. For config.json and the bench."""
    layers = conv2d_layers(model)
    return {**_RECORDS.get(model, {}), "summary": conv_plan(model),
            "matmul_layers": [l.name for l in layers if "convolution_op" in vars(l)],
            "xla_layers": [l.name for l in layers if "convolution_op" not in vars(l)]}


def conv_plan(model):
    """E.g. 'matmul 53/53': how many of the model's Conv2D layers use `kernels.matmul_conv`."""
    convs = conv2d_layers(model)
    return f"matmul {sum('convolution_op' in vars(l) for l in convs)}/{len(convs)}"


def all_layers(model):
    """Every layer of `model`, nested models included, in order."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


def conv2d_layers(model):
    """The plain Conv2D layers of `model`, nested models included, in order."""
    import keras

    return [l for l in all_layers(model) if type(l) is keras.layers.Conv2D]


_FORWARD = weakref.WeakKeyDictionary()


def forward(net):
    """`net`'s inference function x -> logits, one jitted program per batch shape.

    Built once per model (`stateless_call`, training=False, as Keras' predict step) and called
    with the variables' current values, so it follows training; it skips `predict`'s and
    `predict_on_batch`'s per-call machinery, which on a GPU cost more than the forward pass.
    Returns a device array: the caller syncs when it reads it.
    """
    fn = _FORWARD.get(net)
    if fn is None:
        import jax

        ref = weakref.ref(net)  # the cache must not keep the model alive
        step = jax.jit(lambda tv, ntv, x: ref().stateless_call(tv, ntv, x, training=False)[0])

        def fn(x):
            model = ref()
            sync = getattr(model, "jax_state_sync", None)  # inside fit: the state fit holds
            if sync is not None:
                sync()
            return step([v.value for v in model.trainable_variables],
                        [v.value for v in model.non_trainable_variables], x)

        _FORWARD[net] = fn
    return fn
