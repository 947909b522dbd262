"""Weights across frameworks: torchvision/timm ResNet50 state dicts <-> `--arch resnet50_v1_5`
(and the tiny net <-> the PyTorch reference's tiny mirror, for parity checks).

The Keras layers of `tlres.net.resnet_v15` are named after torchvision's modules ("." -> "_"),
so the mapping is a rename plus one layout change per tensor (the table above `CONV`).
Everything here is numpy: a `.safetensors` file is read with `safetensors.numpy` (no pickle, no
torch); a `.pth`/`.pt` file needs torch and is read with `torch.load(weights_only=True)` (tensors
only, no code runs). Conversions are transposes and copies, so Keras -> torch -> Keras is exact.
"""

import os

import numpy as np
from safetensors.numpy import load_file, save_file

from tlres.core.errors import TlresError, brief
from tlres.net.resnet_v15 import NAME

TORCHVISION_FILE = "resnet50-0676ba61.pth"  # torchvision's ResNet50_Weights.IMAGENET1K_V1
TORCHVISION_URL = "https://download.pytorch.org/models/" + TORCHVISION_FILE
TORCHVISION_HASH = "0676ba61"  # the file's sha256 prefix, as torch.hub checks it
TORCH_FILES = (".safetensors", ".pth", ".pt")

# torch                                   Keras
# <conv>.weight        (O, I, kh, kw)     <conv>.kernel          (kh, kw, I, O): transpose (2, 3, 1, 0)
# <bn>.weight / .bias                     <bn>.gamma / .beta
# <bn>.running_mean / .running_var        <bn>.moving_mean / .moving_variance
# <bn>.num_batches_tracked                -- (ignored; written as 0 the other way)
# fc.weight / fc.bias                     -- (ignored: tlres' head is new)
CONV = {"weight": "kernel"}
BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
TO_KERAS, TO_TORCH = (2, 3, 1, 0), (3, 2, 0, 1)  # OIHW -> HWIO and back


def torch_hub_checkpoints():
    """torch.hub's checkpoint folder, `torch.hub.get_dir()/checkpoints`, found without importing torch.

    torch's rule: $TORCH_HOME/hub, where TORCH_HOME defaults to $XDG_CACHE_HOME/torch,
    and XDG_CACHE_HOME to ~/.cache.
    """
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "torch")
    return os.path.join(os.path.expanduser(home), "hub", "checkpoints")


def torchvision_weights_path():
    return os.path.join(torch_hub_checkpoints(), TORCHVISION_FILE)


def download_torchvision_weights():
    """Fetch torchvision's ImageNet ResNet50 file into torch's hub cache (hash-checked, as torch does)."""
    import torch

    path = torchvision_weights_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.hub.download_url_to_file(TORCHVISION_URL, path, hash_prefix=TORCHVISION_HASH)
    return path


def torch_name(layer_name):
    """`layer1_0_downsample_0` -> `layer1.0.downsample.0` (torchvision's module path)."""
    return layer_name.replace("_", ".")


def tiny_torch_name(layer_name):
    """`conv{i}` / `bn{i}` -> the index in the PyTorch reference's tiny Sequential
    ([pad, conv, bn, relu] x 3, pool, flatten, linear): 4i+1 / 4i+2."""
    i = int(layer_name[-1])
    return str(4 * i + (1 if layer_name.startswith("conv") else 2))


def layout(backbone, flag="?"):
    """(how torch names the backbone's layers, a description, the classifier's prefix) for the
    backbones with a torch twin."""
    if backbone.name == NAME:
        return torch_name, "torchvision's ResNet50 layout", "fc."
    if backbone.name == "tiny":
        return tiny_torch_name, "the PyTorch reference's tiny layout", "14."
    raise TlresError(f"--weights {flag}: only --arch {NAME} converts to or from torchvision's "
                     f"ResNet50 (v1.5); this backbone is {backbone.name!r} (Keras' --arch resnet50 "
                     "is ResNet v1, whose weights do not fit v1.5)")


def mapped_layers(backbone, flag="?"):
    """[(torch module path, Keras layer, {torch suffix: Keras variable name}, transpose or None)]."""
    import keras

    name = layout(backbone, flag)[0]
    out = []
    for layer in backbone.layers:
        if type(layer) is keras.layers.Conv2D:
            out.append((name(layer.name), layer, CONV, TO_KERAS))
        elif isinstance(layer, keras.layers.BatchNormalization):
            out.append((name(layer.name), layer, BN, None))
    return out


def torch_shapes(backbone):
    """{torch key: torch shape} that a state dict must hold for `backbone` (fc and counters aside)."""
    shapes = {}
    for prefix, layer, names, perm in mapped_layers(backbone):
        for suffix, var in names.items():
            shape = tuple(getattr(layer, var).shape)
            shapes[f"{prefix}.{suffix}"] = tuple(shape[i] for i in TO_TORCH) if perm else shape
    return shapes


def from_torch(backbone, state, flag, arch="resnet50_v1_5"):
    """Load a torchvision-layout state dict ({name: array}) into a v1.5 backbone; one line if it does not fit."""
    mapped = mapped_layers(backbone, flag)
    _, what, head = layout(backbone, flag)
    want = torch_shapes(backbone)
    got = {k: v for k, v in state.items()
           if not k.startswith(head) and not k.endswith(".num_batches_tracked")}
    missing = [k for k in want if k not in got]
    extra = sorted(k for k in got if k not in want)
    other = [k for k in want if k in got and tuple(np.shape(got[k])) != want[k]]
    if missing or extra or other:
        why = [f"{len(missing)} tensors missing (e.g. {missing[0]})"] if missing else []
        why += [f"{len(extra)} unexpected (e.g. {extra[0]})"] if extra else []
        why += [f"{len(other)} of another shape (e.g. {other[0]} {tuple(np.shape(got[other[0]]))}, "
                f"not {want[other[0]]})"] if other else []
        raise TlresError(f"--weights {flag}: does not fit --arch {arch} ({what}): {'; '.join(why)}")
    for prefix, layer, names, perm in mapped:
        for suffix, var in names.items():
            value = np.asarray(got[f"{prefix}.{suffix}"], dtype="float32")
            getattr(layer, var).assign(np.transpose(value, perm) if perm else value)


def to_torch(backbone, flag="?"):
    """The backbone as a torchvision-layout state dict of numpy arrays (num_batches_tracked = 0)."""
    state = {}
    for prefix, layer, names, perm in mapped_layers(backbone, flag):
        for suffix, var in names.items():
            value = np.asarray(getattr(layer, var))
            state[f"{prefix}.{suffix}"] = np.array(np.transpose(value, TO_TORCH) if perm else value)  # own copy
        if names is BN:
            state[f"{prefix}.num_batches_tracked"] = np.zeros((), np.int64)
    return state


def model_to_torch(net):
    """A whole tlres model (backbone and Dense head) as the PyTorch reference's state dict (numpy):
    its initial weights, say, so that both frameworks start from the same ones."""
    backbone = next(l for l in net.layers if hasattr(l, "layers"))  # the one nested model
    state = to_torch(backbone)
    head = layout(backbone)[2]  # "fc." | the tiny Sequential's "14."
    kernel, bias = net.get_layer("head").get_weights()  # Dense (in, out) -> Linear weight (out, in)
    state.update({f"{head}weight": np.array(kernel.T), f"{head}bias": np.array(bias)})
    return state


def file_sha256(path):
    """The sha256 of a weights file, read in chunks (ResNet50: ~95 MB): how runs name the exact
    initial weights they started from."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_state_dict(state, path):
    """Write {name: numpy array} as a .safetensors file (no pickle, no torch needed to read it)."""
    save_file({k: np.asarray(v, order="C") for k, v in state.items()}, path)  # (not ascontiguousarray: it makes 0-d arrays 1-d)


def read_state_dict(path, flag):
    """{name: numpy array} from a .safetensors (no torch) or .pth/.pt (torch, weights_only) file."""
    if path.endswith(".safetensors"):
        try:
            return load_file(path)
        except Exception as e:  # not safetensors, truncated, a dtype numpy lacks (bfloat16)
            raise TlresError(f"--weights {flag}: not a readable safetensors file "
                             f"({brief(e)})") from None
    torch = require_torch(flag)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle of anything but tensors, truncated file; the type alone, not brief(e):
        # torch's message opens with ~1 kB of advice (terminal escapes, "weights_only=False") before the cause
        raise TlresError(f"--weights {flag}: not a readable state dict (torch.load with "
                         f"weights_only: {type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TlresError(f"--weights {flag}: holds a {type(state).__name__}, not a state dict of tensors "
                         "(save model.state_dict())")
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()}


def require_torch(flag):
    try:
        import torch
    except ImportError:
        raise TlresError(f"--weights {flag}: reading a .pth/.pt file needs PyTorch (pip install torch); "
                         "a .safetensors file of the same state dict needs no torch") from None
    return torch


def torch_available():
    import importlib.util

    return importlib.util.find_spec("torch") is not None

