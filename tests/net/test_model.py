"""Model construction: head size, PyTorch-style BatchNorm, weights in and out."""

import time

import numpy as np
import pytest

from fpbounds import U32, gamma
from tlres.net import model as model_lib
from tlres.net import weights as weights_lib
from tlres.core.config import IMPROVED
from tlres.core.errors import TlresError

CFG = IMPROVED.replace(weights="none")


@pytest.fixture(scope="module")
def resnet():
    return model_lib.build(7, CFG)


def test_head_and_backbone(resnet):
    import keras

    assert resnet.output_shape == (None, 7)
    head = resnet.get_layer("head")
    assert head.kernel.shape == (2048, 7)  # eq. 2: Linear(2048, C)
    bns = [l for l in resnet.get_layer("resnet50").layers
           if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) == 53  # ResNet50: stem + 16 blocks x 3 + 4 shortcuts
    assert all(l.momentum == 0.9 and l.epsilon == 1e-5 for l in bns)


def test_batchnorm_update_uses_configured_momentum():
    import keras

    net = model_lib.build(3, CFG.replace(arch="tiny", bn_momentum=0.9))
    bn = net.get_layer("tiny").get_layer("bn0")
    before = np.asarray(bn.moving_mean).copy()
    x = np.random.default_rng(0).normal(size=(16, 32, 32, 3)).astype("float32") + 3.0
    conv = keras.Model(net.get_layer("tiny").input, net.get_layer("tiny").get_layer("conv0").output)
    v = np.asarray(conv(x), np.float64).reshape(-1, 8)  # bn0's input, m = 16 * 16 * 16 values a channel
    net(x, training=True)
    after = np.asarray(bn.moving_mean, np.float64)
    # Keras convention: new = momentum * old + (1 - momentum) * batch (= PyTorch momentum 0.1).
    # Float32 batch mean of m values: within gamma(m) mean|x| (any summation order); the update
    # rounds 3 more times (two products, a sum).
    want = 0.9 * before + 0.1 * v.mean(0)
    tol = 0.1 * gamma(len(v)) * np.abs(v).mean(0) + 3 * U32 * (0.9 * np.abs(before) + np.abs(want))
    assert np.all(np.abs(after - want) <= tol), np.abs(after - want) / tol
    assert np.all(np.abs(want - before) > 10 * tol)  # the update moved it


def test_weights_file_round_trips_exactly_through_weights_path(resnet, tmp_path):
    rng = np.random.default_rng(0)
    for v in resnet.get_layer("resnet50").weights[:6]:  # move away from the seeded init
        v.assign(rng.normal(size=v.shape).astype("float32"))
    path = str(tmp_path / "backbone.weights.h5")
    resnet.get_layer("resnet50").save_weights(path)
    loaded = model_lib.build(7, CFG.replace(weights=path, seed=123))
    for a, b in zip(resnet.get_layer("resnet50").weights, loaded.get_layer("resnet50").weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_whole_model_weights_file_loads_too(tmp_path):
    net = model_lib.build(4, CFG.replace(arch="tiny", seed=1))
    path = str(tmp_path / "whole.weights.h5")
    net.save_weights(path)
    back = model_lib.build(4, CFG.replace(arch="tiny", seed=2, weights=path))
    for a, b in zip(net.weights, back.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_wrong_architecture_weights_are_one_line(tmp_path):
    net = model_lib.build(4, CFG.replace(arch="tiny"))
    path = str(tmp_path / "tiny.weights.h5")
    net.save_weights(path)
    with pytest.raises(TlresError, match="does not fit --arch resnet50") as e:
        model_lib.build(4, CFG.replace(weights=path))
    assert "\n" not in str(e.value)


def test_imagenet_missing_offline_fails_fast_naming_the_file(tmp_path, monkeypatch):
    from keras.src.backend import config
    from tlres.data import online

    monkeypatch.setattr(config, "keras_home", lambda: str(tmp_path))
    monkeypatch.setattr(online, "reachable", lambda *a, **k: False)
    start = time.monotonic()
    with pytest.raises(TlresError) as e:
        model_lib.build(10, CFG.replace(weights="imagenet"))
    assert time.monotonic() - start < 5
    msg = str(e.value)
    assert weights_lib.IMAGENET_NOTOP in msg and str(tmp_path / "models") in msg
    assert "--weights none" in msg


def test_imagenet_from_keras_cache_is_used_offline(tmp_path, monkeypatch):
    """A file in Keras' cache is loaded without any network (here: a saved backbone)."""
    import keras
    from keras.src.backend import config
    from tlres.data import online

    (tmp_path / "models").mkdir()
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    backbone.layers[2].kernel.assign(np.full(backbone.layers[2].kernel.shape, 0.25, "float32"))
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    # The official file's format: Keras' legacy HDF5 weights, matched by layer order.
    with h5py.File(tmp_path / "models" / weights_lib.IMAGENET_NOTOP, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, backbone)
    monkeypatch.setattr(config, "keras_home", lambda: str(tmp_path))
    monkeypatch.setattr(online, "reachable", lambda *a, **k: pytest.fail("network was used"))
    net = model_lib.build(10, CFG.replace(weights="imagenet"))
    assert (np.asarray(net.get_layer("resnet50").layers[2].kernel) == 0.25).all()


@pytest.mark.parametrize("given, expected", [("none", "none"), ("None", "none"), ("NONE", "none"),
                                             ("imagenet", "imagenet"), ("runs/None", "runs/None")])
def test_weights_none_is_one_spelling(given, expected):
    """Every command reads --weights through `weights.canonical`: 'none' in any case, else as given."""
    assert weights_lib.canonical(given) == expected


SEEDED_BUILD = """
import sys
from tlres.net import model
from tlres.core.config import IMPROVED
net = model.build(10, IMPROVED.replace(arch="tiny", weights="none", conv="xla", pipeline=sys.argv[1]))
print("tensorflow" in sys.modules)
"""


def test_the_jax_pipeline_builds_without_importing_tensorflow_and_seeds_as_keras_does():
    """Keras' set_random_seed imports TensorFlow wherever it is installed; on the jax pipeline
    `model.build` seeds the same way without it (the same initial weights as Keras' seeding)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("tensorflow")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    loaded = {p: subprocess.run([sys.executable, "-c", SEEDED_BUILD, p], env=env, capture_output=True,
                                text=True, check=True).stdout.split()[-1] for p in ("jax", "tf")}
    assert loaded == {"jax": "False", "tf": "True"}
    cfg = IMPROVED.replace(arch="tiny", weights="none", conv="xla", seed=5)
    via_keras = model_lib.build(10, cfg.replace(pipeline="tf")).get_weights()
    without_tf = model_lib.build(10, cfg.replace(pipeline="jax")).get_weights()
    other_seed = model_lib.build(10, cfg.replace(pipeline="jax", seed=6)).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(via_keras, without_tf))
    assert not all(np.array_equal(a, b) for a, b in zip(without_tf, other_seed))
