"""Preemption: SIGTERM and SIGINT stop a run at a step, with a checkpoint and the command that continues it.

While `Guard` is installed (`tlres.run.train.run` does), the first signal during training,
with --checkpoint-on-signal (the default), lets the step finish, checkpoints it
(`step_callback`) and stops; otherwise it stops at once, keeping the last checkpoint. Either
way status.json becomes "interrupted" with the resume command (`interrupted_status`), printed
in one line, and the exit status is 128 + the signal number. A second signal exits at once
(`Guard.exit_now`). The cases at epoch ends and while results are written:
docs/reproducibility.md, "Preemption: SIGTERM and Ctrl-C".
"""

import os
import shlex
import shutil
import signal
import sys
import threading

from tlres.run import checkpoint, rundir, writes

RESUME_MODULE = "tlres.experiments.improved"  # --resume reads every setting from the run directory
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """The run stopped on a signal; `exit_code` is 128 + the signal number."""

    def __init__(self, signum, checkpointed=False):
        self.signum, self.checkpointed = signum, checkpointed
        self.exit_code = 128 + signum
        self.message = f"interrupted by {signal.Signals(signum).name}"
        super().__init__(self.message)

    def __str__(self):
        return self.message


def resume_command(run_dir):
    """The command that continues the run in `run_dir`, runnable from any folder."""
    found = shutil.which("python")
    python = "python" if found and os.path.realpath(found) == os.path.realpath(sys.executable) \
        else shlex.quote(sys.executable)
    return f"{python} -m {RESUME_MODULE} --resume {shlex.quote(os.path.abspath(run_dir))}"


def position(meta):
    """Where a checkpoint's record stands, in words: 'end of epoch 2', 'epoch 3, step 120 of 781'."""
    if meta is None:
        return None
    done, step = meta["epochs_done"], meta.get("step", 0)
    if not step:
        return f"end of epoch {done}" if done else "start of training"
    of = f" of {meta['steps_per_epoch']}" if meta.get("steps_per_epoch") else ""
    return f"epoch {done + 1}, step {step}{of}"


def interrupted_status(run_dir, signum, checkpointed, again=False):
    """(status.json record, one-line message) for a run stopped by `signum`."""
    meta = checkpoint.read_meta(run_dir)
    where = position(meta)
    name = signal.Signals(signum).name
    command = resume_command(run_dir)
    if again:
        head = f"interrupted by a second {name}, at once"
    else:
        head = f"interrupted by {name}"
    if meta is None:
        tail = "no checkpoint yet, so it starts again from the beginning"
    elif checkpointed:
        tail = f"checkpoint written at {where}"
    else:
        tail = f"the last complete checkpoint ({where}) is kept"
    message = f"{head}; {tail}; continue with: {command}"
    record = {"state": "interrupted", "signal": name,
              "epochs_done": meta["epochs_done"] if meta else 0, "step": meta.get("step", 0) if meta else 0,
              "checkpoint_at_signal": bool(checkpointed and meta), "resume": command, "message": message}
    return record, message


class Guard:
    """SIGTERM/SIGINT handling for one run (a context manager; a no-op outside the main thread).

    `deferring` (set by the runner around training): the first signal only sets `requested`,
    for the training callbacks to act on at the end of the step; otherwise it raises
    `Interrupted` at once. A second signal calls `exit_now`.
    """

    def __init__(self, run_dir=None):
        self.run_dir = run_dir  # set by the runner once it knows it
        self.requested = None
        self.deferring = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested is not None:
            self.exit_now(signum)
        self.requested = signum
        if not self.deferring:
            raise Interrupted(signum)

    def exit_now(self, signum):
        """Remove temporary files, mark the run interrupted, print the resume line, and exit."""
        code = 128 + signum
        try:
            if self.run_dir and rundir.RunDir(self.run_dir).has(rundir.STATUS):
                writes.remove_stale(self.run_dir)
                record, message = interrupted_status(self.run_dir, signum, False, again=True)
                rundir.RunDir(self.run_dir).write_status(record)
            else:
                message = f"interrupted by a second {signal.Signals(signum).name}, at once"
            print(f"tlres: {message}", file=sys.stderr, flush=True)
        finally:
            os._exit(code)


def step_callback(out, cfg, steps, guard, state):
    """Checkpoints within and at the end of each epoch, and the stop a signal asked for.

    - every `cfg.checkpoint_every` steps (0: never within an epoch);
    - at the end of the step in which a signal arrived (`guard.requested`), then `Interrupted`;
    - at every epoch's end (after the history row), then `Interrupted` if a signal arrived
      during the epoch's last step or its validation, unless it was the last epoch.

    `state`: the runner's `tlres.run.train.RunState` (history, offset, epoch_lr, epoch_start and
    resume_meta read here; saved, the last checkpoint's record, kept up to date here).
    """
    import time

    import keras

    class AtStep(keras.callbacks.Callback):
        def set_model(self, model):
            super().set_model(model)
            self.net = model  # `self.model` syncs JAX's training state into the model: only when saving

        def save(self, epochs_done, step):
            if not state.writer:  # several processes: process 0 writes the checkpoint
                return
            epoch_state = None
            if step:
                epoch_state = {"lr": state.epoch_lr,
                               "seconds": round(time.perf_counter() - state.epoch_start, 3)}
            checkpoint.save(out, self.model, epochs_done, state.history, step=step,
                            epoch_state=epoch_state, steps_per_epoch=steps)
            state.saved = {"epochs_done": epochs_done, "step": step, "steps_per_epoch": steps}

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch  # also the number of finished epochs
            meta, state.resume_meta = state.resume_meta, None
            if meta is not None:  # fit has just reset the metrics: put the epoch's running sums back
                checkpoint.restore_metrics(self.model, meta)

        def on_train_batch_end(self, batch, logs=None):
            step = state.offset + batch + 1
            if step >= steps:  # the epoch's end checkpoints it (and stops, if asked)
                return
            if guard.requested is not None:
                self.save(self.epoch, step)
                raise Interrupted(guard.requested, checkpointed=True)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                self.save(self.epoch, step)

        def on_epoch_end(self, epoch, logs=None):  # after the history callback has added the row
            state.offset = 0
            self.save(epoch + 1, 0)
            if guard.requested is not None and epoch + 1 < cfg.epochs:
                raise Interrupted(guard.requested, checkpointed=True)

    return AtStep()
