"""--warmup-epochs, --ema and --freeze-backbone-epochs, each against its definition: the warmup's
per-step rates (a float64 formula here, and torch's LinearLR + SequentialLR), the EMA recursion
(numpy, float64), and the head-first phases (the backbone's weights and BatchNorm statistics
exactly as they started after K epochs); a run interrupted mid-warmup, at the phase switch and
after it resumes to the uninterrupted run's results, checkpointed EMA state included."""

import json
import math
import os
import signal

import numpy as np
import pytest

from fpbounds import U32
from helpers import history, write_npz, without_seconds
from tlres.core.config import IMPROVED, QUICK
from tlres.core.errors import TlresError

SPE, EPOCHS, WARMUP = 3, 5, 2  # steps per epoch: the warmup is 6 steps, the schedule then 9
LR, LR_MIN = 0.1, 0.001


def formula(step, schedule, lr=LR, lr_min=LR_MIN, epochs=EPOCHS, warmup=WARMUP, spe=SPE):
    """The rate of `step` in float64, from the option's definition (Config's help)."""
    w = warmup * spe
    if step < w:
        return lr * (step + 1) / w
    if schedule == "constant":
        return lr
    if schedule == "cosine-epoch":  # eq. 14 over the epochs after the warmup
        t, total = step // spe - warmup, epochs - warmup
    else:
        t, total = step - w, (epochs - warmup) * spe
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * t / total)) / 2


def tolerance(step, schedule, lr=LR):
    """Float32 bounds: the warmup rounds lr, (s+1)*lr and the division (3u relative); a
    cosine-epoch rate is float64 rounded once (u); CosineDecay rounds pi*t/T twice (2 pi u of the
    cosine's argument), the cosine (2u), the sum, halving, blend and product (4u), all of lr."""
    if step < WARMUP * SPE or schedule == "constant":
        return 3 * U32 * lr
    return U32 * lr if schedule == "cosine-epoch" else (2 * math.pi + 6) * U32 * lr


def warmup_cfg(schedule):
    return IMPROVED.replace(schedule=schedule, lr=LR, lr_min=LR_MIN, epochs=EPOCHS, warmup_epochs=WARMUP)


@pytest.mark.parametrize("schedule", ["cosine-epoch", "cosine-step", "constant"])
def test_warmup_rates_follow_the_definition_every_step(schedule):
    from tlres.run.schedules import learning_rate

    sched, callbacks = learning_rate(warmup_cfg(schedule), SPE)
    assert callbacks == []  # a function of the step alone: a resumed run continues it
    for s in range(EPOCHS * SPE):
        assert float(sched(s)) == pytest.approx(formula(s, schedule), abs=tolerance(s, schedule)), s


def torch_rates(schedule):
    """torch's documented warmup: LinearLR(start_factor=1/w, total_iters=w-1) per step, then
    SequentialLR hands over to the schedule (cosine-epoch: CosineAnnealingLR stepped per epoch)."""
    torch = pytest.importorskip("torch")
    from torch.optim import lr_scheduler as sch

    w = WARMUP * SPE
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    warm = sch.LinearLR(opt, start_factor=1 / w, total_iters=w - 1)
    if schedule == "cosine-epoch":
        rates = []
        for _ in range(w):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            warm.step()
        cos = sch.CosineAnnealingLR(opt, T_max=EPOCHS - WARMUP, eta_min=LR_MIN)
        for _ in range(EPOCHS - WARMUP):
            rates += [opt.param_groups[0]["lr"]] * SPE
            opt.step()
            cos.step()
        return rates
    after = (sch.CosineAnnealingLR(opt, T_max=(EPOCHS - WARMUP) * SPE, eta_min=LR_MIN)
             if schedule == "cosine-step" else sch.ConstantLR(opt, factor=1.0, total_iters=0))
    seq = sch.SequentialLR(opt, [warm, after], milestones=[w])
    rates = []
    for _ in range(EPOCHS * SPE):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        seq.step()
    return rates


@pytest.mark.parametrize("schedule", ["cosine-epoch", "cosine-step", "constant"])
def test_warmup_rates_equal_torchs_linear_lr_then_sequential_lr(schedule):
    import warnings

    from tlres.run.schedules import learning_rate

    with warnings.catch_warnings():  # torch's notes on scheduler call order, not about the rates
        warnings.simplefilter("ignore")
        want = torch_rates(schedule)
    sched, _ = learning_rate(warmup_cfg(schedule), SPE)
    for s, rate in enumerate(want):
        assert float(sched(s)) == pytest.approx(rate, abs=tolerance(s, schedule)), s


def applied_rates(cfg):
    """The rate of every step as SGD applies it: a weight w with gradient 1 (the loss is the batch
    mean of w * 1), so step s moves w by -lr_s; momentum and weight decay off."""
    import keras

    from tlres.run import schedules, train

    lr, callbacks = schedules.learning_rate(cfg, SPE)
    opt = train.make_optimizer(cfg.replace(optimizer="sgd", momentum=0.0, weight_decay=0.0), lr)
    net = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    net.compile(optimizer=opt, loss=lambda y, p: keras.ops.mean(p))
    seen = [0.0]

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(np.asarray(self.model.weights[0].value)[0, 0]))

    x = np.ones((2 * SPE, 1), np.float32)
    net.fit(x, np.zeros_like(x), batch_size=2, epochs=cfg.epochs, shuffle=False,
            callbacks=callbacks + [Record()], verbose=0)
    return -np.diff(np.float64(seen)), max(abs(v) for v in seen)


@pytest.mark.parametrize("schedule", ["cosine-epoch", "cosine-step", "constant"])
def test_the_optimizer_applies_the_warmup_rates(schedule):
    rates, top = applied_rates(warmup_cfg(schedule))
    assert len(rates) == EPOCHS * SPE
    for s, rate in enumerate(rates):  # w - lr rounds once more: u |w|
        assert rate == pytest.approx(formula(s, schedule), abs=tolerance(s, schedule) + U32 * top), s


def test_no_warmup_keeps_the_per_epoch_cosine_callback():
    from tlres.run.schedules import EpochCosine, learning_rate

    lr, callbacks = learning_rate(IMPROVED.replace(lr=LR, epochs=EPOCHS), SPE)
    assert lr == LR and [type(c) for c in callbacks] == [EpochCosine]


@pytest.mark.parametrize("field", ["warmup_epochs", "freeze_backbone_epochs"])
def test_a_phase_as_long_as_the_run_is_one_line(field):
    IMPROVED.replace(epochs=3, **{field: 2}).validate()
    with pytest.raises(TlresError) as e:
        IMPROVED.replace(epochs=3, **{field: 3}).validate()
    flag = "--" + field.replace("_", "-")
    assert str(e.value) == f"{flag} must be less than --epochs (3), got 3"
    with pytest.raises(TlresError, match=f"^config.json: {field} must be less than config.json: epochs"):
        IMPROVED.replace(epochs=3, **{field: 4}).validate("config.json")


def test_ema_follows_its_definition_and_training_keeps_the_raw_weights():
    """Keras copies the weights into the average on its first step (iterations == 0: momentum 0),
    then averages: ema_0 = w_1, ema_k = d ema_{k-1} + (1-d) w_k. Gradients known: the loss is the
    batch mean of sum(x @ W), so dW[i, j] = mean_b x[b, i]."""
    import keras

    from tlres.run import recipe, train

    d, lr, steps = 0.8, 0.5, 6
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2 * steps, 3)).astype(np.float32)
    w0 = rng.uniform(-1, 1, (3, 2))
    cfg = IMPROVED.replace(ema=d, optimizer="sgd", momentum=0.0, weight_decay=0.0)
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=False, name="head")])
    net.layers[-1].kernel.assign(w0.astype(np.float32))
    net.compile(optimizer=train.make_optimizer(cfg, lr), loss=lambda y, p: keras.ops.sum(keras.ops.mean(p, 0)))
    net.fit(x, np.zeros((len(x), 2), np.float32), batch_size=2, shuffle=False, epochs=1, verbose=0)
    w, ema = w0, None
    for k in range(steps):
        w = w - lr * x[2 * k:2 * k + 2].mean(0)[:, None]
        ema = w if ema is None else d * ema + (1 - d) * w
    tol = 4 * steps * U32 * (1 + steps * lr)  # |w| <= 1 + steps * lr; a few roundings per step
    raw = np.asarray(net.layers[-1].kernel.value)
    assert np.abs(raw - w).max() <= tol
    with recipe.averaged_weights(net):
        averaged = np.asarray(net.layers[-1].kernel.value)
    assert np.abs(averaged - ema).max() <= tol and np.abs(averaged - raw).max() > 100 * tol
    assert np.array_equal(np.asarray(net.layers[-1].kernel.value), raw)  # the raw weights are back


def test_without_ema_the_averaged_weights_are_the_weights():
    import keras

    from tlres.run import recipe

    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    net.compile(optimizer="sgd", loss="mse")
    before = [np.asarray(v) for v in net.weights]
    with recipe.averaged_weights(net):
        assert all(np.array_equal(a, np.asarray(v)) for a, v in zip(before, net.weights))


def test_the_start_line_names_the_options_on():
    from tlres.run import recipe

    assert recipe.options_line(IMPROVED, 10) is None
    line = recipe.options_line(IMPROVED.replace(warmup_epochs=1, ema=0.999, freeze_backbone_epochs=2), 10)
    assert "warmup over 1 epoch (10 steps)" in line and "decay 0.999" in line
    assert "model.keras use the averaged weights" in line and "head alone for 2 epochs" in line
    line = recipe.options_line(IMPROVED.replace(randaugment="3,7", mixup=0.2, cutmix=1.0), 10)
    assert "3 operations per image at magnitude 7 of 30" in line
    assert "MixUp (alpha 0.2) or CutMix (alpha 1), one per batch" in line


# -- real runs: --arch tiny, 64 images, batch 16 (4 steps per epoch), 3 epochs: all three options on

RUN_EPOCHS, STEPS = 3, 4


def run_cfg(data, out):
    return QUICK.replace(arch="tiny", data=data, batch_size=16, epochs=RUN_EPOCHS, out=out, optimizer="sgd",
                         lr=0.05, warmup_epochs=2, ema=0.9, freeze_backbone_epochs=1, keep_checkpoint=True,
                         compile_cache=False)


def spy(monkeypatch, stop_at=None, record=None):
    """Add a callback to the runner's: it asks for a stop (as a signal does) at the end of step
    `stop_at` = (epoch, step), and records every weight at the start and each epoch's end."""
    import keras

    from tlres.run import train

    original = train._callbacks

    def callbacks(cfg, out, evals, ds, steps, eval_loss, guard, state):
        class Spy(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                if record is not None and not record:
                    record.append({w.path: np.asarray(w) for w in self.model.weights})

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if (self.epoch, state.offset + batch + 1) == stop_at:
                    guard.requested = signal.SIGTERM

            def on_epoch_end(self, epoch, logs=None):
                if record is not None:
                    record.append({w.path: np.asarray(w) for w in self.model.weights})

        found = original(cfg, out, evals, ds, steps, eval_loss, guard, state)
        return found[:-1] + [Spy()] + found[-1:]  # before the checkpointer, which acts on the stop

    monkeypatch.setattr(train, "_callbacks", callbacks)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run (weights recorded), and one stopped mid-warmup within the head-alone
    epoch and at that epoch's end (the switch), each time resumed."""
    from tlres.run import preempt, train

    tmp = tmp_path_factory.mktemp("recipe")
    data = write_npz(tmp / "toy.npz", n_train=16 * STEPS, n_test=16)
    full, stopped, record = str(tmp / "full"), str(tmp / "stopped"), []
    mp = pytest.MonkeyPatch()
    try:
        spy(mp, record=record)
        train.run(run_cfg(data, full), verbose=0)
        for i, at in enumerate([(0, 2), (0, STEPS), None]):
            spy(mp, stop_at=at)
            if at is None:
                train.run(run_cfg(data, stopped), verbose=0, resume=True)
                break
            with pytest.raises(preempt.Interrupted):
                train.run(run_cfg(data, stopped), verbose=0, resume=i > 0)
    finally:
        mp.undo()
    return {"full": full, "stopped": stopped, "record": record}


@pytest.mark.slow  # the runs fixture: four tiny-net runs
def test_the_backbone_stays_exactly_as_it_started_while_the_head_trains_alone(runs):
    start, after_head, after_all = runs["record"][:3]
    head = [p for p in start if p.startswith("head/")]  # the new Dense; the rest is tiny's blocks
    backbone = [p for p in start if p not in head]
    assert len(head) == 2 and any("moving_mean" in p for p in backbone) and "conv0/kernel" in backbone
    for p in backbone:  # conv kernels, BatchNorm's scale, offset and moving statistics
        assert np.array_equal(after_head[p], start[p]), p
    assert all(not np.array_equal(after_head[p], start[p]) for p in head)
    for p in ("conv0/kernel", "bn2/moving_mean", "bn2/moving_variance"):
        assert not np.array_equal(after_all[p], after_head[p]), p


def read_ckpt(run):
    with np.load(os.path.join(run, "ckpt", "checkpoint.npz")) as f:
        meta = json.loads(f["meta"].tobytes().decode())
        return meta, {k: f[k] for k in f.files if k != "meta"}


@pytest.mark.slow  # the runs fixture
def test_a_run_stopped_mid_warmup_and_at_the_switch_resumes_to_the_same_results(runs):
    full, stopped = runs["full"], runs["stopped"]
    assert without_seconds(history(stopped)) == without_seconds(history(full))
    for name in ("metrics.json", "predictions.csv"):
        with open(os.path.join(full, name), "rb") as a, open(os.path.join(stopped, name), "rb") as b:
            assert a.read() == b.read(), name
    (meta, a), (_, b) = read_ckpt(full), read_ckpt(stopped)
    assert any(n.endswith("_average") for n in meta["optimizer_variables"])  # the EMA is in it
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # the runs fixture
def test_evaluation_and_model_keras_use_the_averaged_weights(runs):
    import keras

    from helpers import read

    run = runs["full"]
    assert read(run, "metrics.json")["evaluated_weights"] == "ema"
    assert read(run, "config.json")["evaluated_weights"] == "ema"
    meta, arrays = read_ckpt(run)  # the raw weights and the optimizer's averages
    averages = {n.split("/", 1)[1][:-len("_average")]: arrays[f"o{i}"]
                for i, n in enumerate(meta["optimizer_variables"]) if n.endswith("_average")}
    saved = keras.saving.load_model(os.path.join(run, "model.keras")).weights
    assert len(saved) == meta["num_weights"]
    averaged = 0
    for i, w in enumerate(saved):
        key = w.path.replace("/", "_")
        if key in averages:
            averaged += 1
            assert np.array_equal(np.asarray(w), averages[key]) and not np.array_equal(averages[key], arrays[f"w{i}"])
        else:  # BatchNorm's moving statistics: not averaged, the trained ones
            assert np.array_equal(np.asarray(w), arrays[f"w{i}"]), w.path
    assert averaged == sum(1 for w in saved if w.trainable)


@pytest.mark.slow  # builds, compiles and fits the tiny net twice
def test_the_switch_to_every_layer_carries_the_optimizer_state_over():
    """After head-alone steps, the optimizer over every layer starts where one optimizer over all
    of them would be: the same step and head slots and averages; zero momentum and an average
    equal to the weight itself for the backbone, which never moved."""
    import keras

    from tlres.net import model as model_lib
    from tlres.run import recipe, train

    cfg = QUICK.replace(arch="tiny", image_size=8, batch_size=4, epochs=2, optimizer="sgd", momentum=0.9,
                        ema=0.5, freeze_backbone_epochs=1)
    net = model_lib.build(3, cfg)
    train.compile_model(net, cfg, 3, steps_per_epoch=2)
    net.optimizer.build(net.trainable_variables)
    recompile = lambda: train.compile_model(net, cfg, 3, steps_per_epoch=2)  # noqa: E731
    recipe.set_phase(net, True, recompile)
    assert [v.path for v in net.trainable_variables] == ["head/kernel", "head/bias"]
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype(np.float32)
    net.fit(x, np.arange(8) % 3, batch_size=4, epochs=1, shuffle=False, verbose=0)
    head_state = {v.path.split("/", 1)[1]: np.asarray(v) for v in net.optimizer.variables}
    recipe.set_phase(net, False, recompile)
    assert len(net.trainable_variables) > 2 and model_lib.backbone(net).trainable
    new = {v.path.split("/", 1)[1]: np.asarray(v) for v in net.optimizer.variables}
    assert new["iteration"] == head_state["iteration"] == 2
    for name, value in head_state.items():
        assert np.array_equal(new[name], value), name
    weights = {w.path.replace("/", "_"): np.asarray(w) for w in net.weights}
    backbone = [n for n in new if n not in head_state and n != "learning_rate"]
    assert backbone and all(n.endswith(("_momentum", "_average")) for n in backbone)
    for name in backbone:
        if name.endswith("_momentum"):
            assert not new[name].any(), name
        else:
            assert np.array_equal(new[name], weights[name[:-len("_average")]]), name
    assert isinstance(net.optimizer, keras.optimizers.SGD)
