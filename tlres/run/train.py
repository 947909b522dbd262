"""The one runner: `run(cfg)` trains, evaluates and writes a run directory.

Every experiment (presets, ablation cells, the quick run) goes through here, in five steps
(`run`): prepare, build, resume, fit, finish:

    data.load -> model.build -> compile(loss, optimizer, schedule)
      -> model.fit(the pipeline, per-epoch validation on the whole test split)
      -> metrics.json, predictions.csv, history.csv, figures, model.keras

The directory it writes: `tlres.run.rundir.RunDir`; its safe writes: `tlres.run.writes`;
signals: `tlres.run.preempt`; what each failure leaves: `_failed`.
"""

import dataclasses
import os
import sys
import time

import numpy as np

from tlres.core import memory, plots
from tlres.data import augment, loaders as data, pipeline
from tlres.net import backend
from tlres.run import checkpoint, curves, distributed, evaluate, preempt, recipe
from tlres.run import records, rundir, writes
from tlres.net import model as model_lib
from tlres.net import modelfile
from tlres.net import weights as weights_lib
from tlres.net.cpu import kernel_choice
from tlres.core.config import halves, public
from tlres.core.errors import TlresError, TrainingFailed, human, plural


def preprocessing(cfg, class_names):
    """What `model.keras` expects as input, and what its outputs mean (config.json)."""
    return {"image_size": cfg.image_size, "channels": "RGB", "layout": "NHWC",
            "input": "uint8 pixels resized to image_size (bilinear, antialiased when shrinking), then "
                     + augment.NORM_FORMULAS[cfg.input_norm],
            "input_norm": cfg.input_norm, "outputs": "logits (softmax for probabilities)",
            "class_names": list(class_names)}


def validate(cfg):
    """Values the command line checks too (`Config.validate`), for configs built in Python,
    and whether the run can fit in memory at all (`memory.check_fits`)."""
    cfg.validate()
    memory.check_fits(cfg)
    pipeline.check(cfg)
    distributed.check(cfg)


def load_inputs(cfg):
    """The run's data, once its weights are known to be there too: every missing input
    (data, weights) is named in one message, with the fix for each, before anything trains.

    The weights are checked first (a file check, and offline a network probe of seconds),
    so an unusable --data does not hide missing weights until the data is fixed.
    """
    problems = []
    weights = weights_lib.weights_unavailable(cfg.weights, cfg.arch)
    try:
        ds = data.load(cfg.data, cfg.data_dir, cfg.image_size, cfg.test_split, cfg.skip_bad_images)
    except TlresError as e:
        problems.append(str(e))
    problems += [weights] if weights else []
    if len(problems) > 1:
        raise TlresError(f"{len(problems)} inputs are missing or unusable: "
                         + " ".join(f"({i}) {p.rstrip('.')}." for i, p in enumerate(problems, 1)))
    if problems:
        raise TlresError(problems[0])
    return ds


def make_optimizer(cfg, learning_rate):
    import keras

    wd = cfg.weight_decay or None
    ema = recipe.ema_arguments(cfg)  # --ema: Keras' optimizer EMA
    if cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate, momentum=cfg.momentum, weight_decay=wd, **ema)
    elif cfg.optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate, weight_decay=wd, **ema)
    elif cfg.optimizer == "adamw":
        opt = keras.optimizers.AdamW(learning_rate, weight_decay=cfg.weight_decay, **ema)
    else:
        raise TlresError(f"unknown optimizer {cfg.optimizer!r}")
    return recipe.keep_trained_weights(opt)


def compile_model(net, cfg, num_classes, steps_per_epoch, steps_per_execution=1):
    """Compile `net` with the run's loss, optimizer, schedule and metric; returns the schedule's callbacks.

    The runner and `tlres.reference.bench` both go through here, so the bench times the step the runner trains.
    """
    import keras

    from tlres.run import losses, schedules

    lr, callbacks = schedules.learning_rate(cfg, steps_per_epoch)
    loss_fn = losses.SmoothedCrossEntropy(num_classes, cfg.label_smoothing, cfg.smoothing_form)
    # mixed (soft) labels: training accuracy counts the target's argmax as the true class
    metrics = keras.metrics
    accuracy = metrics.CategoricalAccuracy if pipeline.mixing(cfg) else metrics.SparseCategoricalAccuracy
    net.compile(optimizer=make_optimizer(cfg, lr), loss=loss_fn, metrics=[accuracy(name="accuracy")],
                steps_per_execution=steps_per_execution)
    return callbacks


def setup_engine(cfg):
    """Global Keras state a run needs before its model is built: dtype policy, distribution.

    Both are set on every run (also back to the defaults), so runs in one process
    do not leak settings into each other.
    """
    import keras

    keras.mixed_precision.set_dtype_policy(cfg.precision)
    dist = None
    if cfg.data_parallel:
        import jax

        devices = jax.devices()
        if cfg.batch_size % len(devices):
            raise TlresError(f"--data-parallel: --batch-size {cfg.batch_size} does not divide "
                             f"evenly across {len(devices)} devices; use a multiple of {len(devices)}")

        # several processes: tf.data is sharded by Keras; the JAX pipeline yields each process' rows itself
        dist = keras.distribution.DataParallel(devices=devices,
                                               auto_shard_dataset=pipeline.resolve(cfg.pipeline) == "tf")
    keras.distribution.set_distribution(dist)


@dataclasses.dataclass
class RunState:
    """What the training callbacks share, and what `_fit` and `_finish` read back.

    The callbacks run in the order `_callbacks` gives them (which matters there is said once).
    """
    history: list  # the finished epochs' history.csv rows
    writer: bool  # process 0: it writes the run directory (history, checkpoints), the others nothing
    start_epoch: int = 0  # the epochs this process found done (a resume)
    offset: int = 0  # the step the first epoch of this `fit` starts at (a mid-epoch resume), then 0
    saved: dict = None  # the last checkpoint's record (epochs_done, step, steps_per_epoch), or None
    resume_epoch: dict = None  # a mid-epoch resume: the epoch's lr and seconds (taken by EpochEnd)
    resume_meta: dict = None  # a mid-epoch resume: the checkpoint's record (taken by preempt's AtStep)
    epoch_lr: float = None  # the epoch in progress: its learning rate and start (set by EpochEnd)
    epoch_start: float = None
    logits: object = None  # the last validation's logits and metrics (set by EpochEnd)
    metrics: dict = None


def _callbacks(cfg, out, evals, ds, steps, eval_loss, guard, state):
    """The training callbacks after the schedule's, in this order (Keras calls them in list
    order): the non-finite check stops a bad step before the checkpointer could save it; the
    epoch's validation adds its history row before the checkpointer saves the epoch with it."""
    x_eval, n_eval = evals
    curve = [curves.keras_callback(cfg, out.path, steps, state)] if cfg.tensorboard and state.writer else []
    return [_nan_callback(out, state),
            _epoch_callback(cfg, out, x_eval, n_eval, ds.y_test, ds.num_classes, eval_loss, state),
            *curve,  # after the row is added, before the checkpointer may stop the run
            preempt.step_callback(out.path, cfg, steps, guard, state)]


def _epoch_callback(cfg, out, x_eval, n_eval, y_eval, num_classes, loss_fn, state):
    """Per-epoch validation on the whole test split, the lr, and history.csv."""
    import keras

    from tlres.run import schedules

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            resumed, state.resume_epoch = state.resume_epoch, None  # mid-epoch: its start's rate, time
            self.lr = resumed["lr"] if resumed else schedules.current_lr(self.model.optimizer)
            self.start = time.perf_counter() - (resumed["seconds"] if resumed else 0.0)
            state.epoch_lr, state.epoch_start = self.lr, self.start

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.start
            with recipe.averaged_weights(self.model):  # --ema: the averaged weights
                logits = evaluate.predict_logits(self.model, x_eval, n_eval, cfg.batch_size)
            m = evaluate.metrics(logits, y_eval, num_classes, loss_fn)
            logs.update(val_loss=m["loss"], val_accuracy=m["accuracy"],
                        val_mean_class_accuracy=m["mean_class_accuracy"], lr=self.lr)
            state.logits, state.metrics = logits, m
            row = {"epoch": epoch + 1, "seconds": round(seconds, 3),
                   **{k: logs.get(k) for k in rundir.HISTORY_FIELDS if k not in ("epoch", "seconds")}}
            state.history.append(row)
            if state.writer:
                out.write_history(state.history)

    return EpochEnd()


def _nan_callback(out, state):
    """Stop at the first batch whose loss is not finite, naming epoch and step."""
    import math

    import keras

    class StopOnNonFinite(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = float((logs or {}).get("loss", 0.0))  # the epoch's running mean: non-finite
            if not math.isfinite(loss):                 # from the first bad batch on
                self.model.stop_training = True
                kept = "no checkpoint yet (it failed before the first)"
                if state.saved:
                    kept = (f"the last good checkpoint ({preempt.position(state.saved)}) is kept in "
                            f"{os.path.dirname(out.ckpt)}")
                raise TrainingFailed(
                    f"non-finite training loss ({loss}) at epoch {self.epoch + 1}, "
                    f"step {state.offset + batch + 1}; "
                    f"training stopped, {kept}; lower --lr (or --lr-min) or check the data")

    return StopOnNonFinite()


def run(cfg, verbose=None, overwrite=False, resume=False):
    """Train and evaluate `cfg`; returns the run directory's path.

    1 prepare: check the settings, join the other processes, choose --out;
    2 build: data, model and checkpoint, all checked before the run directory is created;
    3 resume: record config.json (a new run) or restore the checkpoint (`resume=True`: the
      run in `cfg.out`, `tlres.run.rundir.resumed_config`), and check the disk;
    4 fit; 5 finish: evaluate, write the results. Any failure after 2: `_failed`.
    SIGTERM and SIGINT stop it at a step (`tlres.run.preempt`).
    """
    with preempt.Guard() as guard:
        out, writer = _prepare(cfg, resume, guard)  # 1
        ds, net, ckpt, t0 = _build(cfg, out, resume, overwrite, writer)  # 2
        created = _open(out, resume, writer, ckpt)
        try:
            state, schedule = _resume(cfg, out, ds, net, ckpt, resume, writer)  # 3
            fit_seconds = _fit(cfg, out, ds, net, state, schedule, guard, verbose)  # 4
            return _finish(cfg, out, ds, net, state, fit_seconds, t0)  # 5
        except BaseException as e:
            _failed(e, out, writer, created)


def _prepare(cfg, resume, guard):
    """1: (RunDir, whether this process writes it): the settings checked, the processes joined."""
    backend.require_jax()
    validate(cfg)
    distributed.initialize(cfg)  # several processes: join them before anything is built
    writer = distributed.is_writer()  # process 0 writes the run directory, the others nothing
    out = rundir.RunDir(cfg.out if resume else rundir.default_out(cfg))
    guard.run_dir = out.path if writer else None
    return out, writer


def _open(out, resume, writer, ckpt):
    """Create the run directory (a new run), drop a killed run's temporary files, mark it
    running; True if this call created it."""
    if not writer:
        return False
    created = False if resume else out.create()
    stale = writes.describe_removed(writes.remove_stale(out.path))
    if stale:
        print(f"tlres: {stale}", flush=True)
    out.write_running(ckpt[0]["epochs_done"] if ckpt else 0, ckpt[0]["step"] if ckpt else 0)
    return created


def _failed(e, out, writer, created):
    """Record and re-raise the failure `e` of a run, by its kind (checked in this order):

    kind                     | kept                 | status.json      | exit     | message adds
    peer lost (collective)   | last checkpoint      | failed           | 3        | the resume command
    any, not process 0       | (process 0's job)    | not written      | e's      | -
    signal before set-up     | nothing (dir removed)| -                | 128+sig  | "nothing was kept"
    signal, Ctrl-C           | checkpoint (at step) | interrupted      | 128+sig  | the resume command
    input error found late   | nothing (dir removed)| -                | 2        | -
    disk full, training      | last checkpoint      | failed (if fits) | 4        | what is kept, the fix
    non-finite loss          | last good checkpoint | failed           | 3        | (said when raised)
    anything else            | last checkpoint      | failed           | e's (1)  | -
    """
    peer = distributed.lost(e)
    if peer is not None:  # a collective failed because another process went away
        e, cause = peer, e
        e.__cause__ = cause
        kept = checkpoint.read_meta(out.path) if writer else None
        if kept is not None:
            e.args = (f"{e.args[0]}; the last complete checkpoint ({preempt.position(kept)}) is kept; "
                      f"continue with: {preempt.resume_command(out.path)} with --num-processes, "
                      "--process-id and --coordinator, on every process",)
    if not writer:
        raise e
    if isinstance(e, KeyboardInterrupt):  # a signal (tlres.run.preempt.Interrupted) or Ctrl-C
        if created and not out.has(rundir.CONFIG):
            out.remove()  # stopped before the run was set up: nothing to resume, leave nothing
            e.message = f"{getattr(e, 'message', 'interrupted')} before the run was set up; nothing was kept"
            e.exit_code = getattr(e, "exit_code", 130)
        else:
            _stopped(out, e)
        raise e
    if created and isinstance(e, TlresError) and not os.path.exists(out.ckpt) \
            and (e.exit_code == 2 or getattr(e, "before_training", False)):
        out.remove()  # an input problem found late: leave nothing that looks like a run
        raise e
    meta = checkpoint.read_meta(out.path)
    try:  # on a full disk this small file may still fit; if not, the error says why
        out.write_failed(e, epochs_done=meta["epochs_done"] if meta else 0,
                         step=meta.get("step", 0) if meta else 0)
    except (OSError, TlresError):
        pass
    if isinstance(e, writes.DiskFull) and not getattr(e, "before_training", False):
        raise writes.DiskFull(f"{e}; {_what_is_kept(out.path, meta, e.remedy)}") from e
    raise e


def _build(cfg, out, resume, overwrite, writer):
    """2: (dataset, model, checkpoint or None, start time), all checked and built before the
    run directory is created. With several processes, a problem one finds stops them all, and
    `distributed.admit` (after the data, before the model) lets only the run's own processes on."""
    with distributed.together():  # a problem one process finds before training stops them all
        if not resume and writer:
            rundir.check_out(out.path, overwrite)
        if writer:
            curves.check(cfg, out.path, curves.KERAS, overwrite, resume)
        if cfg.compile_cache:
            backend.enable_compile_cache()
        t0 = time.perf_counter()
        ds = load_inputs(cfg)
        if len(ds.x_train) < cfg.batch_size:
            raise TlresError(f"--data {cfg.data}: the training split has {len(ds.x_train)} images, fewer "
                             f"than one batch of {cfg.batch_size}; lower --batch-size")
    distributed.admit(cfg, ds)  # several processes: token, settings and data agree, or all stop here
    with distributed.together():
        setup_engine(cfg)  # dtype policy and distribution, before the model is built
        net = model_lib.build(ds.num_classes, cfg)  # checks --weights
        ckpt = None
        if resume:  # every process reads the checkpoint (docs/distributed.md: a shared filesystem)
            ckpt = checkpoint.load(out.path, cfg.epochs)
            record = out.read_config()
            saved = record["dataset"]
            kernel_choice.apply_recorded_plan(net, record.get("conv_plan"))  # auto: the kernels it started with
            if (saved["num_train"], saved["num_test"], saved["num_classes"]) != (
                    len(ds.x_train), len(ds.x_test), ds.num_classes):
                raise TlresError(f"--resume {out.path}: --data {cfg.data} no longer has the run's "
                                 f"{saved['num_train']}/{saved['num_test']} images and "
                                 f"{saved['num_classes']} classes")
            was = record.get("device", {}).get("processes", 1)
            if was != distributed.processes():
                def procs(k):
                    return f"{k} process" + ("es" if k != 1 else "")

                raise TlresError(f"--resume {out.path}: the run was trained by {procs(was)}, this is "
                                 f"{procs(distributed.processes())}; resume it with --num-processes {was}")
    return ds, net, ckpt, t0


def _write_config(cfg, out, ds, net):
    """config.json: the settings (no run token), the data, and how the run is executed."""
    out.write_config({
        "config": dataclasses.asdict(public(cfg).replace(out=out.path)),  # no run token
        **halves(public(cfg).replace(out=out.path)),  # the same settings: what it computes, how it ran
        "dataset": {
            "name": ds.name, "num_train": len(ds.x_train), "num_test": len(ds.x_test),
            "num_classes": ds.num_classes, "class_names": list(ds.class_names),
            **(ds.record or {})},
        "preprocessing": preprocessing(cfg, ds.class_names),
        "evaluated_weights": recipe.evaluated_weights(cfg),  # --ema: the averaged weights
        "versions": records.versions(), "device": records.device(),
        "conv_plan": kernel_choice.conv_plan_record(net),  # which kernel each convolution uses
        "pipeline": pipeline.resolve(cfg.pipeline),
        # on a GPU they decide whether a rerun is bit-identical (docs/gpu.md)
        "xla_flags": os.environ.get("XLA_FLAGS", "")})
    if ds.files:
        out.write_split(ds.files)


def _what_is_kept(out, meta, remedy):
    """The end of a full disk's line: what survives and how to continue."""
    if meta is None:
        return f"no checkpoint was written yet; {remedy} and start again"
    return (f"the last complete checkpoint ({preempt.position(meta)}) is kept; {remedy}, then "
            f"continue with: {preempt.resume_command(out)}")


def _stopped(out, exc):
    """Mark a run stopped by a signal as interrupted, and give `exc` its one line."""
    import signal

    signum = getattr(exc, "signum", signal.SIGINT)  # a bare KeyboardInterrupt is Ctrl-C
    record, message = preempt.interrupted_status(out.path, signum, getattr(exc, "checkpointed", False))
    try:
        out.write_status(record)
    except (OSError, TlresError):
        pass
    exc.message, exc.exit_code = message, 128 + signum


def _resume(cfg, out, ds, net, ckpt, resume, writer):
    """3: config.json (a new run) or the checkpoint restored, the model compiled, the disk
    checked, the run announced; (the callbacks' RunState, the schedule's callbacks)."""
    if not resume and writer:
        _write_config(cfg, out, ds, net)
    meta = ckpt[0] if ckpt else None
    start_epoch = meta["epochs_done"] if meta else 0
    start_step = meta["step"] if meta else 0  # > 0: resumed within epoch start_epoch + 1
    steps = len(ds.x_train) // cfg.batch_size
    schedule = compile_model(net, cfg, ds.num_classes, steps)
    if not net.optimizer.built:  # as fit would: its variables are part of the checkpoint's size
        net.optimizer.build(net.trainable_variables)
    if writer:  # every layer training: the largest checkpoint
        check_space(cfg, out.path, net, len(ds.x_test))
    # --freeze-backbone-epochs: the phase the checkpoint was written in (a new run: the first)
    recipe.set_phase(net, recipe.frozen_at(cfg, start_epoch, start_step, steps),
                     lambda: compile_model(net, cfg, ds.num_classes, steps))
    if ckpt:
        checkpoint.restore(net, ckpt)
    resuming = ""
    if meta:
        resuming = (f" (resuming at epoch {start_epoch + 1}, step {start_step} of {steps})" if start_step
                    else f" (resuming after epoch {start_epoch})")
    print(f"tlres: {cfg.preset} preset on {ds.name} ({len(ds.x_train)} train / {len(ds.x_test)} test, "
          f"{ds.num_classes} classes), {plural(cfg.epochs, 'epoch')}, batch {cfg.batch_size}, "
          f"weights={cfg.weights}, device={records.device()['kind']}, "
          f"pipeline={pipeline.resolve(cfg.pipeline)}, {cfg.precision} -> {out.path}" + resuming
          + (f"; process {distributed.index()} of {distributed.processes()}"
             + ("" if writer else ", writing nothing") if distributed.processes() > 1 else ""), flush=True)
    options = recipe.options_line(cfg, steps)
    if options:
        print(f"tlres: {options}", flush=True)
    state = RunState(history=list(meta["history"]) if meta else [], writer=writer,
                     start_epoch=start_epoch, offset=start_step, saved=meta)
    if writer:
        out.write_history(state.history)  # drop rows past the checkpoint
    if start_step:  # the epoch in progress: its rate, seconds and running sums go on where they were
        state.resume_epoch, state.resume_meta = meta["epoch"], meta
    return state, schedule


def _fit(cfg, out, ds, net, state, schedule, guard, verbose):
    """4: train from where `state` starts to `cfg.epochs`; the seconds it took. Afterwards
    `state.logits` and `state.metrics` hold the final evaluation."""
    from tlres.run import losses  # imports keras

    steps = len(ds.x_train) // cfg.batch_size
    eval_loss = losses.SmoothedCrossEntropy(ds.num_classes, cfg.label_smoothing,
                                            cfg.smoothing_form, reduction=None)
    x_eval, n_eval = pipeline.eval_arrays(ds.x_test, cfg.batch_size, cfg.input_norm)
    callbacks = schedule + _callbacks(cfg, out, (x_eval, n_eval), ds, steps, eval_loss, guard, state)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    t_fit = time.perf_counter()
    # A mid-epoch resume trains the rest of that epoch as one fit, then the later epochs as another:
    # the same batches, optimizer steps and schedule position as one uninterrupted fit.
    start_epoch, start_step = state.start_epoch, state.offset
    phases = [(start_epoch, start_epoch + 1, start_step)] if start_step else []
    phases.append((start_epoch + (1 if start_step else 0), cfg.epochs, 0))
    phases = recipe.split_phases(phases, cfg.freeze_backbone_epochs)  # head alone, then every layer
    # a signal stops at the end of a step, checkpointed; with several processes at once (they could
    # not agree on the step without a collective per step), keeping the last checkpoint
    guard.deferring = cfg.checkpoint_on_signal and distributed.processes() == 1
    rows = distributed.local_rows(cfg.batch_size) if distributed.processes() > 1 else None
    for first, end, skip in phases:
        if first < end:
            recipe.set_phase(net, first < cfg.freeze_backbone_epochs,
                             lambda: compile_model(net, cfg, ds.num_classes, steps))
            net.fit(pipeline.train_data(ds.x_train, ds.y_train, cfg, first, end, start_step=skip, rows=rows,
                                        num_classes=ds.num_classes),
                    epochs=end, initial_epoch=first, steps_per_epoch=steps - skip,
                    shuffle=False,  # the pipeline shuffles, by (seed, epoch)
                    callbacks=callbacks, verbose=verbose)
    guard.deferring = True  # trained: writing the results takes seconds, so a signal lets them finish
    fit_seconds = time.perf_counter() - t_fit
    if state.metrics is None:  # resumed after the last epoch's checkpoint: evaluate it again
        with recipe.averaged_weights(net):
            state.logits = evaluate.predict_logits(net, x_eval, n_eval, cfg.batch_size)
        state.metrics = evaluate.metrics(state.logits, ds.y_test, ds.num_classes, eval_loss)
    return fit_seconds


def _finish(cfg, out, ds, net, state, fit_seconds, t0):
    """5: predictions, figures, model.keras, metrics.json and status "finished" (process 0
    alone), then the result in one line; returns the run directory's path."""
    m = state.metrics  # the last epoch's validation is the final evaluation
    m.update(epochs=cfg.epochs, class_names=list(ds.class_names),
             evaluated_weights=recipe.evaluated_weights(cfg))  # --ema: "ema"
    if not state.writer:
        return out.path
    if distributed.processes() > 1:  # process 0 writes alone: nothing from here on may be collective
        import keras                 # (model.keras' fresh variables would be, under the distribution)

        keras.distribution.set_distribution(None)
    out.write_predictions(state.logits, ds.y_test)
    writes.staged_files(out.path, rundir.FIGURES, lambda folder: plots.run_figures(
        folder, state.history, m, ds.class_names, title=f"{cfg.preset} ({ds.name})"))
    metadata = {"preprocessing": preprocessing(cfg, ds.class_names),
                "evaluation": {"batch_size": cfg.batch_size, "conv": cfg.conv}}
    with recipe.averaged_weights(net):  # --ema: model.keras holds the averaged weights
        writes.staged(out.model_keras, lambda path: modelfile.save(net, path, metadata),
                      needed=_weights_bytes(net) + 100_000)
    out.write_metrics(m)
    if not cfg.keep_checkpoint:  # model.keras is what a finished run is for; ckpt/ only resumes
        out.clear(checkpoint.DIRNAME)
    out.write_finished(cfg.epochs, state.start_epoch, fit_seconds, time.perf_counter() - t0)
    lo, hi = m["accuracy_ci95"]
    print(f"tlres: test accuracy {m['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}, n={m['num_test']}), "
          f"mean per-class accuracy {m['mean_class_accuracy']:.4f}, loss {m['loss']:.4f}; "
          f"{fit_seconds:.0f} s training -> {out.path}", flush=True)
    note = bn_note(cfg.bn_momentum, cfg.epochs * (len(ds.x_train) // cfg.batch_size))
    if note:
        print(f"tlres: note: {note}", flush=True)
    return out.path


def _weights_bytes(net):
    return sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in net.weights)


def check_space(cfg, out, net, num_test):
    """Stop before training when `out`'s filesystem cannot hold what the run will write.

    The peak is two checkpoints (the next is written beside the last before replacing
    it; `checkpoint.estimate_bytes` from the model, optimizer built), less a checkpoint
    already there, plus the small files (figures, predictions, history: ~0.5 MB and
    40 bytes per test image). model.keras (the weights only) is written while one
    checkpoint remains, so it fits in the second checkpoint's room.
    """
    one = checkpoint.estimate_bytes(net, cfg.epochs)
    existing = os.path.getsize(checkpoint.path(out)) if os.path.exists(checkpoint.path(out)) else 0
    small = 500_000 + 40 * num_test + 300 * cfg.epochs
    needed = 2 * max(one, _weights_bytes(net) + 100_000) + small - existing
    try:
        writes.check_free(out, needed, f"two checkpoints of about {human(one)}, as the next is "
                                       f"written beside the last, and {human(small)} of results")
    except writes.DiskFull as e:
        e.before_training = True
        raise


def bn_note(momentum, updates, threshold=0.01):
    """Why a short run's evaluation can read far worse than its training, or None.

    Evaluation uses BatchNorm's moving statistics; after k training steps their initial values
    (mean 0, variance 1) still weigh momentum**k in them. Above `threshold` (1%: k < 44 steps at
    momentum 0.9) the network is evaluated with statistics its layers never had, and a
    validation loss in the hundreds is that, not a bug.
    """
    left = momentum ** updates
    if left <= threshold:
        return None
    return (f"BatchNorm's moving statistics had only {updates} update{'s' if updates != 1 else ''} "
            f"(at --bn-momentum {momentum:g} their initial values still weigh {100 * left:.0f}%), so "
            "the evaluation, which uses them, can read far worse than training; train more steps "
            "(more --epochs, a smaller --batch-size) before reading its loss and accuracy")
