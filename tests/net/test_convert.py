"""--arch resnet50_v1_5 is torchvision's ResNet50: torch state dicts load into it and give torch's
outputs; Keras -> torch -> Keras is exact; files that do not fit are one line.

Expected values come from torchvision's own `resnet50()` run in float64, never from tlres.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from tlres.net import convert, model as model_lib  # noqa: E402
from tlres.net import weights as weights_lib  # noqa: E402
from tlres.core.config import IMPROVED  # noqa: E402
from tlres.core.errors import TlresError  # noqa: E402

V15 = IMPROVED.replace(arch="resnet50_v1_5", weights="none")
U = 2.0 ** -24  # float32's unit roundoff


def random_resnet50(seed=0):
    """torchvision's resnet50(num_classes=10), default init, with BatchNorm affine and running stats
    randomised so that every BN tensor is exercised (they start at 1, 0, 0, 1)."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet50(num_classes=10)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return net


def torch_copy(state, dtype, train):
    net = torchvision.models.resnet50(num_classes=10)
    net.load_state_dict(state)
    return net.to(dtype).train(train)


@pytest.fixture(scope="module")
def torch_state():
    return random_resnet50().state_dict()


@pytest.fixture(scope="module")
def numpy_state(torch_state):
    return {k: v.numpy() for k, v in torch_state.items()}


@pytest.fixture(scope="module")
def converted(numpy_state):
    """tlres' resnet50_v1_5 at 64 px with torch's backbone; its new head set to torch's fc by hand."""
    net = model_lib.build(10, V15.replace(image_size=64))
    convert.from_torch(net.get_layer("resnet50_v1_5"), numpy_state, "test")
    net.get_layer("head").set_weights([numpy_state["fc.weight"].T, numpy_state["fc.bias"]])  # Linear: x W^T + b
    return net


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_torchvision_resnet50_converted_gives_torchs_outputs(converted, torch_state, numpy_state, train):
    """Eval mode (running statistics) and train mode (batch statistics), 2 images at 64 px.

    Bound: 100 x the float64 network's own response to moving every weight by one float32 rounding
    (relative 2^-24, random signs), since float32 rounds at every operation rather than once per
    weight; a layout error (kernel orientation, padding side, stride placement) moves logits by O(1).
    (At 32 px, train mode is chaotic: BatchNorm over 2 values per channel in layer4.)
    """
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype("float32")
    x_torch = torch.from_numpy(x).permute(0, 3, 1, 2)
    with torch.no_grad():
        ref = torch_copy(torch_state, torch.float64, train)(x_torch.double()).numpy()
        t32 = torch_copy(torch_state, torch.float32, train)(x_torch).numpy()
        probe_net = torch_copy(torch_state, torch.float64, train)
        g = torch.Generator().manual_seed(2)
        for p in probe_net.parameters():
            p.mul_(1.0 + U * torch.randint(0, 2, p.shape, generator=g, dtype=torch.float64).mul(2).sub(1))
        sensitivity = np.abs(probe_net(x_torch.double()).numpy() - ref).max()
    bound = 100 * sensitivity
    saved = [np.asarray(w) for w in converted.non_trainable_weights]
    with jax.default_matmul_precision("float32"):  # true float32 on a GPU too (not TF32)
        keras_out = np.asarray(converted(x, training=train))
    for w, v in zip(converted.non_trainable_weights, saved):  # train mode moved the BN statistics
        w.assign(v)
    assert 0 < bound < 0.05 * np.abs(ref).max()  # the check means something: bound << the logits
    assert np.abs(t32 - ref).max() <= bound  # torch float32 is within it too
    assert np.abs(keras_out - ref).max() <= bound, (np.abs(keras_out - ref).max(), bound)
    if not train:  # the bound tells a wrong layout apart: kernels with H and W swapped
        swapped = {k: (v.transpose(0, 1, 3, 2) if v.ndim == 4 else v) for k, v in numpy_state.items()}
        convert.from_torch(converted.get_layer("resnet50_v1_5"), swapped, "test")
        with jax.default_matmul_precision("float32"):
            wrong = np.asarray(converted(x, training=False))
        convert.from_torch(converted.get_layer("resnet50_v1_5"), numpy_state, "test")
        assert np.abs(wrong - ref).max() > 100 * bound


def test_timm_resnet50_state_dict_loads_and_gives_timms_logits(converted, numpy_state):
    """timm's resnet50 has torchvision's names and shapes; its weights give timm's eval logits
    (bound as above). Runs where timm is installed (not a tlres dependency)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(4)
    net = timm.create_model("resnet50", pretrained=False, num_classes=10)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype("float32")
    with torch.no_grad():
        ref = net.double().eval()(torch.from_numpy(x).permute(0, 3, 1, 2).double()).numpy()
        g = torch.Generator().manual_seed(2)
        for p in net.parameters():
            p.mul_(1.0 + U * torch.randint(0, 2, p.shape, generator=g, dtype=torch.float64).mul(2).sub(1))
        bound = 100 * np.abs(net(torch.from_numpy(x).permute(0, 3, 1, 2).double()).numpy() - ref).max()
    convert.from_torch(converted.get_layer("resnet50_v1_5"), state, "timm")
    head = converted.get_layer("head").get_weights()
    converted.get_layer("head").set_weights([state["fc.weight"].T, state["fc.bias"]])
    with jax.default_matmul_precision("float32"):
        keras_out = np.asarray(converted(x, training=False))
    convert.from_torch(converted.get_layer("resnet50_v1_5"), numpy_state, "test")
    converted.get_layer("head").set_weights(head)
    assert 0 < bound < 0.05 * np.abs(ref).max()
    assert np.abs(keras_out - ref).max() <= bound, (np.abs(keras_out - ref).max(), bound)


def test_layer_names_are_torchvisions_and_round_trip_is_exact():
    net = model_lib.build(10, V15.replace(seed=3))
    backbone = net.get_layer("resnet50_v1_5")
    rng = np.random.default_rng(3)
    for v in backbone.non_trainable_weights:  # moving statistics away from 0 and 1
        v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
    state = convert.to_torch(backbone)
    expected = set(torchvision.models.resnet50().state_dict()) - {"fc.weight", "fc.bias"}
    assert set(state) == expected  # every tensor of torchvision's backbone, named as torch names it
    tnet = torchvision.models.resnet50(num_classes=10)
    missing, unexpected = tnet.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()},
                                               strict=False)
    assert missing == ["fc.weight", "fc.bias"] and unexpected == []  # shapes checked by torch
    back = model_lib.build(10, V15.replace(seed=4))
    convert.from_torch(back.get_layer("resnet50_v1_5"),
                       {k: v.numpy() for k, v in tnet.state_dict().items()}, "test")
    pairs = list(zip(backbone.weights, back.get_layer("resnet50_v1_5").weights))
    assert len(pairs) == 53 + 4 * 53  # 53 convolutions, 53 BatchNorms x 4 tensors
    for a, b in pairs:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_architecture_matches_torchvisions_block_by_block():
    """Strides where v1.5 puts them: the 3x3 of each first block, and the 1x1 shortcut."""
    net = model_lib.build(10, V15)
    b = net.get_layer("resnet50_v1_5")
    t = torchvision.models.resnet50()
    for i, stride in zip(range(1, 5), (1, 2, 2, 2)):
        block = getattr(t, f"layer{i}")[0]
        assert block.conv2.stride == (stride, stride) and block.conv1.stride == (1, 1)
        assert tuple(b.get_layer(f"layer{i}_0_conv2").strides) == (stride, stride)
        assert tuple(b.get_layer(f"layer{i}_0_conv1").strides) == (1, 1)
        assert tuple(b.get_layer(f"layer{i}_0_downsample_0").strides) == (stride, stride)
    assert b.output_shape == (None, 1, 1, 2048)
    assert not any(getattr(l, "use_bias", False) for l in b.layers)  # torch: bias=False everywhere


def test_wrong_architecture_is_one_line(tmp_path):
    net = model_lib.build(10, V15)
    r18 = {k: v.numpy() for k, v in torchvision.models.resnet18().state_dict().items()}
    with pytest.raises(TlresError, match="does not fit --arch resnet50_v1_5") as e:
        convert.from_torch(net.get_layer("resnet50_v1_5"), r18, "r18.safetensors")
    assert "\n" not in str(e.value) and "missing" in str(e.value) and "another shape" in str(e.value)
    import keras

    v1 = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    with pytest.raises(TlresError, match="v1.5.*this backbone is 'resnet50'") as e:  # Keras' v1
        convert.to_torch(v1)
    assert "\n" not in str(e.value)
    path = tmp_path / "r18.safetensors"
    from safetensors.numpy import save_file

    save_file(r18, str(path))
    with pytest.raises(TlresError, match="resnet50_v1_5, not --arch resnet50") as e:  # Keras' v1
        weights_lib.resolve_weights(str(path), "resnet50")
    with pytest.raises(TlresError, match="does not fit --arch resnet50_v1_5") as e:
        model_lib.build(10, V15.replace(weights=str(path)))
    assert "\n" not in str(e.value)
    with pytest.raises(TlresError, match="--arch resnet50_v1_5, not --arch resnet50"):
        weights_lib.resolve_weights("torchvision", "resnet50")


NO_TORCH = r"""
import sys


class NoTorch:  # any import of torch now fails (sys.modules["torch"] = None trips scipy's checks)
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")


sys.meta_path.insert(0, NoTorch())
import numpy as np
from safetensors.numpy import load_file
from tlres.net import model
from tlres.core.config import IMPROVED
path = sys.argv[1]
net = model.build(10, IMPROVED.replace(arch="resnet50_v1_5", weights=path))
state = load_file(path)
b = net.get_layer("resnet50_v1_5")
np.testing.assert_array_equal(np.asarray(b.get_layer("layer3_5_conv2").kernel),
                              state["layer3.5.conv2.weight"].transpose(2, 3, 1, 0))
np.testing.assert_array_equal(np.asarray(b.get_layer("layer2_0_downsample_1").moving_variance),
                              state["layer2.0.downsample.1.running_var"])
print("torch imported:", "torch" in sys.modules)
"""


def test_safetensors_loads_without_torch(tmp_path, numpy_state):
    from safetensors.numpy import save_file

    path = str(tmp_path / "resnet50.safetensors")
    save_file(numpy_state, path)
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", NO_TORCH, path], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torch imported: False" in done.stdout


def test_torchvision_weights_from_torch_hub_cache_with_weights_only(tmp_path, monkeypatch, torch_state):
    from tlres.data import online

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert convert.torch_hub_checkpoints() == os.path.join(torch.hub.get_dir(), "checkpoints")
    monkeypatch.setattr(online, "reachable", lambda *a, **k: False)
    with pytest.raises(TlresError) as e:  # offline, not cached: the file and the folder, one line
        model_lib.build(10, V15.replace(weights="torchvision"))
    msg = str(e.value)
    assert "\n" not in msg and "resnet50-0676ba61.pth" in msg
    assert str(tmp_path / "th" / "hub" / "checkpoints") in msg and "--weights none" in msg

    os.makedirs(tmp_path / "th" / "hub" / "checkpoints")
    torch.save(torch_state, tmp_path / "th" / "hub" / "checkpoints" / "resnet50-0676ba61.pth")
    calls, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or load(*a, **k))
    monkeypatch.setattr(online, "reachable", lambda *a, **k: pytest.fail("network was used"))
    for flag in ("torchvision", "imagenet"):  # imagenet = the --arch's own network's weights
        net = model_lib.build(10, V15.replace(weights=flag))
        got = np.asarray(net.get_layer("resnet50_v1_5").get_layer("conv1").kernel)
        np.testing.assert_array_equal(got, torch_state["conv1.weight"].numpy().transpose(2, 3, 1, 0))
    assert calls and all(k.get("weights_only") is True for k in calls)


class NotATensor:
    pass


def test_pth_with_code_is_refused_in_one_line(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "x": NotATensor()}, path)
    with pytest.raises(TlresError, match="not a readable state dict") as e:  # weights_only refuses it
        model_lib.build(10, V15.replace(weights=str(path)))
    assert "\n" not in str(e.value)


def test_tiny_net_and_the_references_tiny_mirror_are_the_same_function():
    """The parity checks' small network: Keras' tiny net, converted, gives the PyTorch reference's
    tiny mirror's logits (Keras' "same" padding included), eval and train mode, 4 images at 32 px.
    Bound as for ResNet50: 100 x the float64 network's response to a one-rounding weight change."""
    from tlres.core.config import QUICK
    from tlres.reference import torch as ref

    cfg = QUICK.replace(arch="tiny")
    net = model_lib.build(10, cfg)
    rng = np.random.default_rng(5)
    for layer in net.get_layer("tiny").layers[2::3]:  # the BatchNorms: statistics away from 0 and 1
        layer.moving_mean.assign(rng.normal(0.0, 0.1, layer.moving_mean.shape).astype("float32"))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape).astype("float32"))
    net.get_layer("head").bias.assign(rng.normal(0.0, 0.1, 10).astype("float32"))
    state = {k: torch.from_numpy(v) for k, v in convert.to_torch(net.get_layer("tiny")).items()}
    kernel, bias = net.get_layer("head").get_weights()
    state.update({"14.weight": torch.from_numpy(kernel.T.copy()), "14.bias": torch.from_numpy(bias)})
    x = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    x_torch = torch.from_numpy(x).permute(0, 3, 1, 2)
    for train in (False, True):
        nets = []
        for dtype in (torch.float64, torch.float32, torch.float64):
            t = ref.build(cfg, 10)
            t.load_state_dict(state)  # strict: every tensor, head included, by the mirror's names
            nets.append(t.to(dtype).train(train))
        with torch.no_grad():
            g = torch.Generator().manual_seed(2)
            for p in nets[2].parameters():
                p.mul_(1.0 + U * torch.randint(0, 2, p.shape, generator=g, dtype=torch.float64).mul(2).sub(1))
            ref64, t32, probe = (n(x_torch.to(n[1].weight.dtype)).numpy() for n in nets)
        bound = 100 * np.abs(probe - ref64).max()
        with jax.default_matmul_precision("float32"):
            keras_out = np.asarray(net(x, training=train))
        assert 0 < bound < 0.05 * np.abs(ref64 - ref64.mean(0)).max()  # << how the logits vary
        assert np.abs(t32 - ref64).max() <= bound
        assert np.abs(keras_out - ref64).max() <= bound, (train, np.abs(keras_out - ref64).max(), bound)
