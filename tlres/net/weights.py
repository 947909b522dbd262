"""`--weights`: where a network's initial weights come from, whether they can be had here, and
loading them into a built network.

Sources: 'imagenet' (the ImageNet weights of the architecture's own network: Keras' file for
resnet50, torchvision's for resnet50_v1_5), 'torchvision', 'none', a finished run's directory,
a .keras model (its backbone: the transfer step with a model of your own), a .weights.h5 file,
or a torch state dict (.safetensors, .pth, .pt; `tlres.net.convert`). A missing file is named,
with its download host probed, before anything is loaded.
"""

import os

from tlres.core.errors import TlresError, brief
from tlres.data import online
from tlres.net import convert, modelfile
from tlres.net.resnet_v15 import NAME as V15

NONE = "none"
IMAGENET_NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_NOTOP


def canonical(weights):
    """The --weights value as tlres compares it: 'none' in any case is 'none', anything else as given."""
    return NONE if weights.lower() == NONE else weights


def imagenet_weights_path():
    """Where Keras' `get_file` caches the ResNet50 ImageNet (no-top) weights."""
    from keras.src.backend import config

    return os.path.join(config.keras_home(), "models", IMAGENET_NOTOP)


def _torchvision_problem(weights, arch):
    """Why torchvision's ImageNet weights cannot be had for `arch` here, or None."""
    if arch != V15:
        return (f"--weights torchvision: torchvision's ResNet50 weights are v1.5 and fit --arch "
                f"{V15}, not --arch {arch} (whose ImageNet weights are --weights imagenet)")
    if not convert.torch_available():
        return (f"--weights {weights}: torchvision's {convert.TORCHVISION_FILE} is a torch file and "
                "needs PyTorch (pip install torch); or save its state dict as .safetensors and "
                "pass that path")
    path = convert.torchvision_weights_path()
    if os.path.exists(path) or online.reachable("download.pytorch.org"):
        return None
    return (f"torchvision's ImageNet weights for ResNet50 ({convert.TORCHVISION_FILE}) are not "
            f"in torch's hub cache ({os.path.dirname(path)}) and the download host is "
            f"unreachable: copy {convert.TORCHVISION_URL} to that folder (or set TORCH_HOME), "
            "or run with --weights none")


def _imagenet_problem(arch):
    """Why Keras' ResNet50 ImageNet weights cannot be had here, or None."""
    if arch == "tiny":
        return "--arch tiny has no ImageNet weights; use --weights none"
    path = imagenet_weights_path()
    if os.path.exists(path) or online.reachable("storage.googleapis.com"):
        return None
    return (f"ImageNet weights for ResNet50 are not in Keras' cache ({path}) and the download "
            f"host is unreachable: copy {IMAGENET_URL} to that path, or run with --weights none")


def _file_problem(weights, arch):
    """Why the run directory or file `weights` cannot initialise `arch`, or None."""
    if os.path.isdir(weights):
        if not os.path.isfile(os.path.join(weights, modelfile.MODEL_FILE)):
            return (f"--weights {weights}: no {modelfile.MODEL_FILE} in that folder (a finished tlres "
                    "run writes one; a failed or running run has none yet)")
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


def _is_torchvision(weights, arch):
    return weights == "torchvision" or (weights == "imagenet" and arch == V15)


def weights_unavailable(weights, arch="resnet50"):
    """Why `--weights` cannot be had here, with the fix, or None if it can (checked without
    loading anything: the runner asks before it loads the data, to name every missing input at once).

    'imagenet' is the ImageNet weights of `arch`'s own network: Keras' file for
    resnet50, torchvision's (= 'torchvision') for resnet50_v1_5.
    """
    if weights == NONE:
        return None
    if _is_torchvision(weights, arch):
        return _torchvision_problem(weights, arch)
    if weights == "imagenet":
        return _imagenet_problem(arch)
    return _file_problem(weights, arch)


def resolve_weights(weights, arch="resnet50"):
    """'imagenet' | 'torchvision' | 'none' | RUN_DIR | model.keras | .weights.h5 | a torch state
    dict (.safetensors, .pth, .pt) -> what `load` loads (or one line)."""
    problem = weights_unavailable(weights, arch)
    if problem:
        raise TlresError(problem)
    if weights == NONE:
        return None
    if _is_torchvision(weights, arch):
        path = convert.torchvision_weights_path()
        # in torch's hub cache, or torch.hub downloads it, checks its hash prefix and caches it
        return path if os.path.exists(path) else "torchvision"
    if weights == "imagenet":
        path = imagenet_weights_path()
        # in the cache, or Keras downloads it, verifies the hash and caches it
        return path if os.path.exists(path) else "imagenet"
    if os.path.isdir(weights):
        return os.path.join(weights, modelfile.MODEL_FILE)
    return weights


def load(model, backbone, source, cfg):
    """Load `source` (what `resolve_weights` gave for cfg.weights) into the built `model`: its
    `backbone` for ImageNet files, torch state dicts and .keras models, else whichever fits."""
    import keras

    if source == "imagenet":  # Let Keras fetch and verify the file into its cache, then load it.
        keras.applications.ResNet50(include_top=False, weights="imagenet",
                                    input_shape=(cfg.image_size, cfg.image_size, 3))
        source = imagenet_weights_path()
    if source == "torchvision":
        source = convert.download_torchvision_weights()
    if source is None:
        return
    if source.endswith(".keras"):
        load_backbone(backbone, source, cfg.weights, cfg.arch)
    elif source.endswith(convert.TORCH_FILES):
        convert.from_torch(backbone, convert.read_state_dict(source, cfg.weights), cfg.weights, cfg.arch)
    else:
        _load_file(model, backbone, source, cfg.weights, cfg.arch)


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

    source = modelfile.load_keras(path, f"--weights {flag}")
    inner = [l for l in source.layers if isinstance(l, keras.Model)]
    if len(inner) != 1:
        raise TlresError(f"--weights {flag}: does not fit: it has no single backbone model inside "
                         "(a tlres model file has one)")
    return inner[0]


def _load_file(model, backbone, path, flag, arch="resnet50"):
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
