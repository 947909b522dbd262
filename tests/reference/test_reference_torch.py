"""The PyTorch reference runner: tlres' flags, tlres' run directory, Keras' optimizer semantics."""

import csv
import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")


def test_flags_resolve_to_the_same_config_as_tlres():
    from tlres.commands import cli
    from tlres.commands import torch as torch_cmd

    argv = ["--preset", "quick", "--epochs", "2", "--no-flip", "--smoothing-form", "keras",
            "--bn-momentum", "0.99", "--seed", "3", "--out", "/tmp/x"]
    cfg, extra = torch_cmd.parse(argv + ["--limit-train", "64", "--device", "cpu"])
    assert cfg == cli.parse_all(argv, "improved", "p")[0]
    assert (extra.limit_train, extra.limit_test, extra.device) == (64, None, "cpu")


@pytest.mark.parametrize("flag", [["--input-norm", "caffe"], ["--precision", "mixed_bfloat16"],
                                  ["--data-parallel"], ["--weights", "some.weights.h5"],
                                  ["--arch", "tiny", "--weights", "imagenet"], ["--resume", "x"]])
def test_unsupported_settings_are_one_line_exit_2(tmp_path, capsys, flag):
    from tlres.commands import torch as torch_cmd

    out = tmp_path / "run"
    try:
        rc = torch_cmd.main(flag + ["--out", str(out)])
    except SystemExit as e:  # argparse-level refusal (--resume)
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "error" in err
    assert not out.exists()


def test_bn_momentum_is_one_minus_keras_momentum():
    from tlres.core.config import IMPROVED
    from tlres.reference import torch as ref

    model = ref.build(IMPROVED.replace(arch="tiny", weights="none", bn_momentum=0.99, bn_epsilon=1e-3), 10)
    bns = [m for m in model.modules() if type(m).__name__ == "BatchNorm2d"]
    # 1 - 0.99 in float64 is 0.01 to a few ulps (pytest.approx's default, 1e-6 relative, covers it)
    assert len(bns) == 3 and all(m.momentum == pytest.approx(0.01) and m.eps == 1e-3 for m in bns)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizer_and_weight_decay_match_keras(optimizer):
    """Three updates of the same weights with the same gradients: torch reference vs tlres' Keras optimizer.

    Each side runs in float32 and in float64. Float32 against its own float64 run: per step t the
    weight rounds once (u |w|) and its update dw_t goes through <= 16 float32 operations (moments,
    bias corrections, sqrt, division, decay), each <= u relative; for Adam the bias corrections
    1 - beta^t of the float32-rounded betas lose u beta^t / (1 - beta^t) relative (1000u for
    beta2 = 0.999 at t = 1, halved by the sqrt). So <= sum_t u |w| + |dw_t| (16u + those), with
    |dw_t| from the float64 run. Keras' float64 run against torch's: equal for SGD (to
    float64 rounding); for Adam and AdamW Keras adds epsilon to sqrt(v) before the bias
    correction, torch after: the rules differ by lr |m_hat| eps / (sqrt(1 - beta2^t) v_hat) per
    step t, <= lr * 1.5 * eps / (sqrt(1 - beta2^t) * 0.25) with 0.5 <= |g| <= 1.5.
    """
    import keras
    import torch

    from fpbounds import U32, float64_keras
    from tlres.run import train
    from tlres.core.config import IMPROVED
    from tlres.reference import torch as ref

    cfg = IMPROVED.replace(optimizer=optimizer, lr=0.1, weight_decay=0.05)
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    # |g| in [0.5, 1.5]: far from 0, where Keras' epsilon (added before bias correction) and
    # torch's (after) would differ by far more than float32 round-off
    grads = [(rng.uniform(0.5, 1.5, (4, 3)) * rng.choice([-1, 1], (4, 3))).astype(np.float32)
             for _ in range(3)]

    def keras_side(dtype):
        kw = keras.Variable(w0.astype(dtype))
        kopt = train.make_optimizer(cfg, cfg.lr)
        path = [w0.astype(np.float64)]
        for g in grads:
            kopt.apply_gradients([(keras.ops.convert_to_tensor(g.astype(dtype)), kw)])
            path.append(keras.ops.convert_to_numpy(kw).astype(np.float64))
        return path

    def torch_side(dtype):
        tw = torch.nn.Parameter(torch.from_numpy(w0.astype(dtype)))
        topt, decay = ref.make_optimizer(cfg, [tw])
        path = [w0.astype(np.float64)]
        for g in grads:
            tw.grad = torch.from_numpy(g.astype(dtype))
            ref.optimizer_step(topt, decay)
            path.append(tw.detach().numpy().astype(np.float64))
        return path

    k32, t32 = keras_side(np.float32)[-1], torch_side(np.float32)[-1]
    with float64_keras():
        k64_path = keras_side(np.float64)
    t64_path = torch_side(np.float64)
    k64, t64 = k64_path[-1], t64_path[-1]
    float32_bound = 0.0
    for t in (1, 2, 3):
        dw = max(np.abs(p[t] - p[t - 1]).max() for p in (k64_path, t64_path))
        per_op = 16 * U32
        if optimizer != "sgd":
            per_op += U32 * 0.999 ** t / (2 * (1 - 0.999 ** t)) + U32 * 0.9 ** t / (1 - 0.9 ** t)
        float32_bound += U32 * max(np.abs(p[t]).max() for p in (k64_path, t64_path)) + dw * per_op
    eps_placement = 0.0 if optimizer == "sgd" else sum(
        cfg.lr * 1.5 * 1e-7 / (np.sqrt(1 - 0.999 ** t) * 0.25) for t in (1, 2, 3))
    assert np.abs(k32 - k64).max() <= float32_bound, (np.abs(k32 - k64).max(), float32_bound)
    assert np.abs(t32 - t64).max() <= float32_bound, (np.abs(t32 - t64).max(), float32_bound)
    # + 1e-12: float64 rounding of three updates of weights below 2, a few ulps
    assert np.abs(k64 - t64).max() <= eps_placement + 1e-12, (np.abs(k64 - t64).max(), eps_placement)
    # and torch's own SGD weight_decay (an L2 gradient term) would not match for SGD
    if optimizer == "sgd":
        lw = torch.nn.Parameter(torch.from_numpy(w0.copy()))
        l2 = torch.optim.SGD([lw], lr=0.1, momentum=0.9, weight_decay=0.05)
        for g in grads:
            lw.grad = torch.from_numpy(g.copy())
            l2.step()
        assert np.abs(lw.detach().numpy() - k32).max() > 1e-3


@pytest.mark.slow
def test_tiny_reference_run_writes_tlres_run_dir(tmp_path):
    from tlres.data import loaders as data
    from tlres.commands import torch as torch_cmd
    from tlres.core.config import Config
    from tlres.analysis.results import load

    out = tmp_path / "run"
    argv = ["--data", "digits", "--arch", "tiny", "--weights", "none", "--epochs", "2",
            "--limit-train", "64", "--limit-test", "30", "--device", "cpu", "--out", str(out)]
    assert torch_cmd.main(argv) == 0
    cfg_json = json.loads((out / "config.json").read_text())
    m = json.loads((out / "metrics.json").read_text())
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    hist = list(csv.DictReader(open(out / "history.csv")))
    assert cfg_json["framework"] == "pytorch"
    assert cfg_json["config"] == json.loads(json.dumps(dataclasses.asdict(torch_cmd.parse(argv)[0].replace(out=str(out)))))
    assert Config(**cfg_json["config"]).arch == "tiny"
    assert cfg_json["dataset"]["num_train"] == 64 and cfg_json["dataset"]["num_test"] == 30
    assert json.loads((out / "status.json").read_text())["state"] == "finished"
    labels = data.load("digits", None, 32).y_test[:30]
    assert m["num_test"] == 30 and len(rows) == 30 and m["epochs"] == 2 and len(m["class_names"]) == 10
    np.testing.assert_array_equal([int(r["label"]) for r in rows], labels)  # tlres' split, index by index
    assert m["correct"] == sum(r["label"] == r["prediction"] for r in rows)
    assert [int(h["epoch"]) for h in hist] == [1, 2]
    # CosineAnnealingLR(T_max=2) in float64: a few ulps from 0.01 and 0.005
    assert [float(h["lr"]) for h in hist] == pytest.approx([0.01, 0.005], rel=1e-12)
    assert float(hist[-1]["val_accuracy"]) == m["accuracy"]  # one evaluation, written twice
    (r,) = load(str(out))
    assert r["framework"]["name"] == "pytorch" and r["predictions"]["label"] == labels.tolist()


def test_reference_run_writes_model_pt_and_weights_run_dir_takes_its_backbone(tmp_path, capsys):
    import torch

    from tlres.commands import torch as torch_cmd
    from tlres.core.config import QUICK
    from tlres.reference import torch as ref

    src = tmp_path / "src"
    ref.run(QUICK.replace(arch="tiny", epochs=1, out=str(src)), limit_train=64, limit_test=16,
            verbose=False)
    saved = torch.load(src / "model.pt", weights_only=True)
    net = ref.build(QUICK.replace(arch="tiny", weights=str(src), seed=7), 4)
    head = f"{len(net) - 1}."
    backbone = {k: v for k, v in saved.items() if not k.startswith(head)}
    assert len(backbone) == 18  # 3 x (conv weight + BN weight, bias, running mean, var, count)
    for k, v in backbone.items():
        assert torch.equal(net.state_dict()[k], v), k
    assert net[-1].out_features == 4  # a new head for the new classes
    from tlres.net import model as model_lib  # and tlres' tiny net takes the same backbone: torch -> Keras

    keras_net = model_lib.build(4, QUICK.replace(arch="tiny", weights=str(src / "model.pt")))
    np.testing.assert_array_equal(np.asarray(keras_net.get_layer("tiny").get_layer("conv2").kernel),
                                  saved["9.weight"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(np.asarray(keras_net.get_layer("tiny").get_layer("bn1").moving_variance),
                                  saved["6.running_var"].numpy())
    import keras

    keras_run = tmp_path / "keras"  # a tlres-style model whose backbone has no torch twin (as v1's)
    keras_run.mkdir()
    inputs = keras.Input((32, 32, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="c")(inputs), name="other")
    keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(other(inputs)))
                ).save(keras_run / "model.keras")
    rc = torch_cmd.main(["--arch", "tiny", "--weights", str(keras_run), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "v1.5" in err
    rc = torch_cmd.main(["--data", "digits", "--weights", str(src), "--out", str(tmp_path / "o")])  # tiny source
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "does not fit" in err and not (tmp_path / "o").exists()


def test_reference_starts_from_a_keras_resnet50_v1_5_run(tmp_path):
    """Keras -> torch: a tlres --arch resnet50_v1_5 model's backbone becomes the torch model's, tensor
    for tensor (kernels HWIO -> OIHW, BatchNorm gamma/beta/moving stats), with a new fc."""
    import torch

    from tlres.net import model as model_lib, modelfile
    from tlres.core.config import QUICK
    from tlres.reference import torch as ref

    cfg = QUICK.replace(arch="resnet50_v1_5")
    net = model_lib.build(10, cfg)
    backbone = net.get_layer("resnet50_v1_5")
    rng = np.random.default_rng(0)
    for v in backbone.non_trainable_weights:
        v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
    run = tmp_path / "keras_run"
    run.mkdir()
    modelfile.save(net, str(run / "model.keras"))
    for source in (run, run / "model.keras"):
        tnet = ref.build(cfg.replace(weights=str(source)), 4)
        state = tnet.state_dict()
        np.testing.assert_array_equal(state["conv1.weight"].numpy(),
                                      np.asarray(backbone.get_layer("conv1").kernel).transpose(3, 2, 0, 1))
        bn = backbone.get_layer("layer4_0_downsample_1")
        for suffix, var in [("weight", bn.gamma), ("bias", bn.beta), ("running_mean", bn.moving_mean),
                            ("running_var", bn.moving_variance)]:
            np.testing.assert_array_equal(state[f"layer4.0.downsample.1.{suffix}"].numpy(), np.asarray(var))
        assert tnet.fc.out_features == 4
