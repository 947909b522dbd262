"""The options beyond the paper in the PyTorch reference (warmup, EMA, RandAugment, MixUp, CutMix,
head first), each against its definition, computed here independently of the code under test."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from helpers import write_npz  # noqa: E402
from tlres.core.config import QUICK  # noqa: E402
from tlres.core.errors import TlresError  # noqa: E402
from tlres.reference import torch as ref  # noqa: E402

LR, LR_MIN = 0.1, 0.001


def _cosine(t, T):
    """The cosine schedule's rate at t of T (eq. 14 of the paper, CosineAnnealingLR's closed form)."""
    return LR_MIN + (LR - LR_MIN) * (1 + math.cos(math.pi * t / T)) / 2


def _rates(cfg, steps_per_epoch):
    """The rate each training step runs at, driving the reference's scheduler as its loop does."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    clock, rates = ref.make_scheduler(cfg, opt, steps_per_epoch), []
    for _ in range(cfg.epochs):
        for _ in range(steps_per_epoch):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            clock.after_step()
        clock.after_epoch()
    return rates


@pytest.mark.filterwarnings("ignore::UserWarning")  # SequentialLR's own step(0) at the milestone
@pytest.mark.parametrize("schedule", ["cosine-epoch", "cosine-step", "constant"])
@pytest.mark.parametrize("warmup,spe", [(0, 3), (2, 3), (1, 1)])
def test_warmup_then_schedule_per_step(schedule, warmup, spe):
    """Step s < Ws = W*spe trains at lr*(s+1)/Ws; after it, the schedule over the epochs left:
    cosine-epoch: epoch t at cosine(t-W, E-W); cosine-step: step s at cosine(s-Ws, (E-W)*spe)."""
    E = 5
    cfg = QUICK.replace(schedule=schedule, lr=LR, lr_min=LR_MIN, epochs=E, warmup_epochs=warmup)
    ws = warmup * spe
    want = []
    for s in range(E * spe):
        if s < ws:
            want.append(LR * (s + 1) / ws)
        elif schedule == "cosine-epoch":
            want.append(_cosine(s // spe - warmup, E - warmup))
        elif schedule == "cosine-step":
            want.append(_cosine(s - ws, (E - warmup) * spe))
        else:
            want.append(LR)
    # float64 rates; CosineAnnealingLR's recursive form rounds once per step: a few ulps
    assert _rates(cfg, spe) == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_warmup_must_leave_epochs_for_the_schedule():
    with pytest.raises(TlresError, match="--warmup-epochs 3 must be fewer than --epochs 3"):
        ref.check_supported(QUICK.replace(arch="tiny", epochs=3, warmup_epochs=3))


def _ema_recursion(values, d):
    """a_1 = w_1 (the first update copies the weights, as Keras' at iterations 0), then
    a_k = d a_(k-1) + (1-d) w_k, in float64."""
    a = np.asarray(values[0], np.float64)
    for w in values[1:]:
        a = d * a + (1 - d) * np.asarray(w, np.float64)
    return a


def test_ema_averages_parameters_and_evaluates_with_live_buffers():
    """The reference's EMA: parameters by the recursion, updated after each step; BatchNorm
    statistics are the live model's, also after a forward pass since the last update."""
    d, steps = 0.9, 4
    cfg = QUICK.replace(arch="tiny", ema=d)
    torch.manual_seed(0)
    model = ref.build(cfg, 3)
    ema = ref.make_ema(cfg, model)
    rng = np.random.default_rng(0)

    def forward():  # moves the BatchNorm statistics, as a training step's forward pass does
        with torch.no_grad():
            model.train()(torch.from_numpy(rng.normal(size=(4, 3, 16, 16)).astype(np.float32)))

    history = []
    for _ in range(steps):
        forward()
        with torch.no_grad():  # a "step": new parameters
            for p in model.parameters():
                p.copy_(torch.from_numpy(rng.normal(size=p.shape).astype(np.float32)))
        history.append({n: p.detach().numpy().copy() for n, p in model.named_parameters()})
        ema.update_parameters(model)
    forward()
    net = ref.evaluated(model, ema)
    assert [n for n, _ in net.named_parameters()] == list(history[0])
    for n, p in net.named_parameters():
        want = _ema_recursion([h[n] for h in history], d)
        # float32 lerp per update: <= 2u of values below 4 per update, 4 updates
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=0, atol=steps * 2 * 2 ** -24 * 4)
        assert not np.array_equal(p.detach().numpy(), history[-1][n])  # not the live weights
    for (n, b), live in zip(net.named_buffers(), model.buffers()):
        assert torch.equal(b, live), n


@pytest.mark.slow  # imports Keras (JAX): seconds on its own
def test_keras_optimizer_ema_is_the_same_recursion():
    """Keras' optimizer EMA (what tlres' runner uses) against the recursion the reference is
    checked against: the first update copies the weights after the first step."""
    import keras

    d = 0.9
    rng = np.random.default_rng(1)
    w = keras.Variable(np.zeros(3, np.float32))
    opt = keras.optimizers.SGD(learning_rate=1.0, use_ema=True, ema_momentum=d)
    weights = []
    for g in rng.normal(size=(4, 3)).astype(np.float32):
        opt.apply_gradients([(keras.ops.convert_to_tensor(g), w)])
        weights.append(np.asarray(w))
    np.testing.assert_allclose(np.asarray(opt._model_variables_moving_average[0]),
                               _ema_recursion(weights, d), rtol=0, atol=1e-6)


def _constant_batch(values, size=8):
    """One image per value, every pixel that value (NCHW float32), labels 0..B-1."""
    x = torch.tensor(values, dtype=torch.float32)[:, None, None, None].expand(-1, 3, size, size).clone()
    return x, torch.arange(len(values))


def test_mixup_mixes_labels_with_the_images_weights():
    """Each mixed image is w_a x_a + w_b x_b with (w_a, w_b) its target's weights on their classes;
    the weights are Beta(alpha, alpha) draws (Kolmogorov-Smirnov against scipy's Beta)."""
    from scipy import stats

    C, alpha = 6, 0.4
    mix = ref.batch_mix(QUICK.replace(mixup=alpha), C)
    values = [1.0, 10.0, 100.0, 1000.0, 1e4]
    torch.manual_seed(0)
    own = []
    for _ in range(400):
        x, y = _constant_batch(values, size=2)
        xm, t = mix(x, y)
        assert t.shape == (5, C) and torch.allclose(t.sum(1), torch.ones(5))
        for j in range(5):
            classes = torch.nonzero(t[j]).flatten().tolist()
            want = sum(float(t[j, c]) * values[c] for c in classes)
            assert torch.allclose(xm[j], torch.full_like(xm[j], want), rtol=1e-6)
        own.append(float(t[0, 0]))
    assert stats.kstest(own, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_cutmix_label_weight_is_the_area_the_image_keeps():
    """The target's weight on an image's own class is the fraction of its pixels it keeps; the
    rest is one axis-aligned box, the same in every channel, holding one other image."""
    C = 4
    mix = ref.batch_mix(QUICK.replace(cutmix=1.0), C)
    values = [1.0, 2.0, 3.0, 4.0]
    torch.manual_seed(1)
    partial = 0
    for _ in range(50):
        x, y = _constant_batch(values, size=10)
        xm, t = mix(x, y)
        for j in range(4):
            kept = xm[j] == values[j]
            assert bool((kept == kept[0]).all())  # the same box in every channel
            rows, cols = torch.nonzero(~kept[0], as_tuple=True)
            if len(rows):
                box = ~kept[0][rows.min():rows.max() + 1, cols.min():cols.max() + 1]
                assert bool(box.all()) and int(box.sum()) == len(rows)  # a filled rectangle
                assert len(set(xm[j][~kept].tolist())) == 1  # of one other image
                partial += 1
            assert float(t[j, j]) == pytest.approx(float(kept[0].float().mean()), abs=1e-6)
            assert float(t[j].sum()) == pytest.approx(1.0, abs=1e-6)
    assert partial > 0


def test_mixup_and_cutmix_together_pick_one_per_batch():
    from torchvision.transforms import v2

    mix = ref.batch_mix(QUICK.replace(mixup=0.2, cutmix=1.0), 10)
    assert isinstance(mix, v2.RandomChoice) and mix.p == [0.5, 0.5]
    assert [type(t) for t in mix.transforms] == [v2.MixUp, v2.CutMix]
    assert [t.alpha for t in mix.transforms] == [0.2, 1.0] and ref.batch_mix(QUICK, 10) is None


def test_randaugment_applies_n_operations_at_magnitude_m(monkeypatch):
    """After flip and crop, on the uint8 image: N operations per image, each at bin M of 31 of its
    range (Rotate: M degrees; ShearX/Y: 0.3 M/30; Brightness..Sharpness: 0.9 M/30, sign random)."""
    from torchvision.transforms import v2

    n, m = 3, 12
    tf = ref.train_transform(QUICK.replace(augment=True, flip=True, crop_padding=4, randaugment=f"{n},{m}"), 16)
    assert [type(t) for t in tf.transforms] == [v2.RandomHorizontalFlip, v2.RandomCrop, v2.RandAugment]
    applied = []
    real = v2.RandAugment._apply_image_or_video_transform

    def spy(self, image, transform_id, magnitude, *a, **k):
        applied.append((transform_id, magnitude, image.dtype))
        return real(self, image, transform_id, magnitude, *a, **k)

    monkeypatch.setattr(v2.RandAugment, "_apply_image_or_video_transform", spy)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8)
    out = [tf(im) for im in images]
    assert len(applied) == n * len(images) and all(o.dtype == torch.uint8 for o in out)
    assert all(dtype == torch.uint8 for *_, dtype in applied)
    scale = {"Rotate": 30.0, "ShearX": 0.3, "ShearY": 0.3, "Brightness": 0.9, "Color": 0.9,
             "Contrast": 0.9, "Sharpness": 0.9}
    seen = {op for op, _, _ in applied if op in scale}
    assert len(seen) >= 4
    for op, magnitude, _ in applied:
        if op in scale:
            assert abs(magnitude) == pytest.approx(scale[op] * m / 30, rel=1e-6), op


@pytest.mark.parametrize("form", ["paper", "keras"])
def test_soft_targets_in_both_smoothing_forms(form):
    """Soft targets t: paper q = t(1-eps) + (1-t) eps/(C-1), keras q = t(1-eps) + eps/C, loss
    -sum q log softmax(z), in float64 numpy; a mixed target's loss is the mix of the two losses."""
    C, eps, lam = 5, 0.1, 0.3
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, C))
    a, b = rng.integers(0, C, 6), rng.integers(0, C, 6)
    t = lam * np.eye(C)[a] + (1 - lam) * np.eye(C)[b]
    q = t * (1 - eps) + ((1 - t) * eps / (C - 1) if form == "paper" else eps / C)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    want = -(q * logp).sum(1)
    loss = ref.criterion(QUICK.replace(label_smoothing=eps, smoothing_form=form), C)
    zt = torch.from_numpy(z.astype(np.float32))
    got = loss(zt, torch.from_numpy(t.astype(np.float32))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)  # float32 log-softmax of values near 1
    hard = lam * loss(zt, torch.from_numpy(a)).numpy() + (1 - lam) * loss(zt, torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, hard, rtol=1e-5)


def test_draws_tlres_refuses_the_batch_options_in_one_line(tmp_path, capsys):
    from tlres.commands import torch as torch_cmd

    out = tmp_path / "run"
    rc = torch_cmd.main(["--arch", "tiny", "--weights", "none", "--draws", "tlres", "--mixup", "0.2",
                         "--randaugment", "2,9", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--randaugment/--mixup" in err and "--draws torch" in err
    assert not out.exists()
    ref.check_supported(QUICK.replace(arch="tiny", ema=0.9, warmup_epochs=1, freeze_backbone_epochs=1),
                        "tlres")  # the rest are the same with tlres' batches


def _backbone(state, model):
    head = ref.head_prefix(model)
    return {k: v for k, v in state.items() if not k.startswith(head)}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_frozen_backbone_stays_put_then_trains(tmp_path, optimizer):
    """--freeze-backbone-epochs 1: after epoch 1 the backbone's weights and BatchNorm buffers are
    its initial ones (weight decay on, so it must skip them too) and the head moved; after epoch
    2 the backbone moved."""
    npz = write_npz(tmp_path / "d.npz", n_train=32, n_test=8)
    cfg = QUICK.replace(data=npz, arch="tiny", optimizer=optimizer, weight_decay=0.05, lr=0.01,
                        batch_size=16, freeze_backbone_epochs=1)
    torch.manual_seed(cfg.seed)
    initial = ref.build(cfg, 4)
    start = {k: v.clone() for k, v in initial.state_dict().items()}
    states = []
    for epochs in (1, 2):
        out = tmp_path / f"e{epochs}"
        ref.run(cfg.replace(epochs=epochs, out=str(out)), verbose=False)
        states.append(torch.load(out / "model.pt", weights_only=True))
    head = ref.head_prefix(initial)
    for k, v in _backbone(start, initial).items():
        assert torch.equal(states[0][k], v), k
    assert all(not torch.equal(states[0][k], v) for k, v in start.items() if k.startswith(head))
    moved = [k for k, v in _backbone(start, initial).items() if not torch.equal(states[1][k], v)]
    assert {k.split(".")[-1] for k in moved} >= {"weight", "running_mean", "running_var"}
    assert len(moved) == len(_backbone(start, initial))  # every backbone tensor, counters included


class Stopped(Exception):
    pass


def _stop(*a):
    raise Stopped


def test_crosscheck_passes_the_options_to_both_sides(tmp_path, monkeypatch):
    """The crosscheck's overrides reach the tlres cell and the PyTorch cell alike; with tlres'
    shared batches the batch options are refused before anything trains."""
    from tlres.commands import crosscheck as cmd
    from tlres.reference import crosscheck

    flags = ["--ema", "0.99", "--warmup-epochs", "1", "--freeze-backbone-epochs", "1", "--mixup", "0.2",
             "--cutmix", "1.0", "--randaugment", "2,9", "--arch", "tiny"]
    args, overrides = cmd.parse(["--out", str(tmp_path / "cc"), "--draws", "torch"] + flags)
    seen = {}
    monkeypatch.setattr(crosscheck, "initial_weights", lambda *a: None)
    monkeypatch.setattr(crosscheck, "torch_side", lambda out, cell, *a: seen.setdefault("torch", cell) and [])
    monkeypatch.setattr(crosscheck, "tlres_side", lambda grid, cell, *a: seen.setdefault("tlres", cell) and [])
    monkeypatch.setattr(crosscheck.compare, "compare", _stop)
    with pytest.raises(Stopped):
        crosscheck.run(args.out, overrides, seeds=1, draws="torch")
    fields = ("ema", "warmup_epochs", "freeze_backbone_epochs", "mixup", "cutmix", "randaugment")
    want = (0.99, 1, 1, 0.2, 1.0, "2,9")
    assert tuple(getattr(seen["torch"], f) for f in fields) == want
    assert seen["torch"] == seen["tlres"]
    assert "which differ in definition" in crosscheck.own_definitions(seen["torch"])
    monkeypatch.setattr(crosscheck, "torch_side", lambda *a: pytest.fail("trained before refusing"))
    with pytest.raises(TlresError, match="--draws torch"):
        crosscheck.run(str(tmp_path / "cc2"), overrides, seeds=1, draws="tlres")
    assert not (tmp_path / "cc2").exists()


@pytest.mark.slow
def test_a_run_with_every_option(tmp_path):
    """All six options together train, evaluate and write the run directory."""
    import csv

    npz = write_npz(tmp_path / "d.npz", n_train=32, n_test=8)
    cfg = QUICK.replace(data=npz, arch="tiny", epochs=2, batch_size=16, warmup_epochs=1, ema=0.9,
                        randaugment="2,9", mixup=0.2, cutmix=1.0, freeze_backbone_epochs=1,
                        out=str(tmp_path / "r"))
    ref.run(cfg, verbose=False)
    rows = list(csv.DictReader(open(tmp_path / "r" / "history.csv")))
    assert [float(r["lr"]) for r in rows] == pytest.approx([cfg.lr / 2, cfg.lr], rel=1e-12)
    assert all(math.isfinite(float(r["loss"])) for r in rows)
