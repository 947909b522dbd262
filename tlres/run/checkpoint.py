"""Checkpoints: one file, written atomically, enough to resume exactly.

`RUN/ckpt/checkpoint.npz` holds the weights (BatchNorm statistics included), every optimizer
variable and a JSON record: the finished epochs, their history rows and the step reached in
the epoch in progress (0 at an epoch's end). A mid-epoch checkpoint (--checkpoint-every, a
signal) also holds the epoch's metric sums, its learning rate and seconds, so a resumed epoch
ends with the same history row. The data order needs no state: batch b of epoch e is a pure
function of (seed, e, b) (`tlres.data.pipeline`). Written through `tlres.run.writes.atomic`:
a kill leaves the previous checkpoint or the new one. What it holds and why not Keras'
`BackupAndRestore`: docs/reproducibility.md, "Checkpoints and --resume" and "Why not Keras'
own mechanisms".
"""

import json
import os

import numpy as np

from tlres.data import loaders as data
from tlres.run import writes
from tlres.core.errors import TlresError, brief

DIRNAME, FILENAME = "ckpt", "checkpoint.npz"


def path(run_dir):
    return os.path.join(run_dir, DIRNAME, FILENAME)


PER_ARRAY = 320  # bytes around each array in the .npz: zip64 headers, central directory, .npy header


def save(run_dir, model, epochs_done, history, step=0, epoch_state=None, steps_per_epoch=None):
    """Write the checkpoint: `epochs_done` finished epochs and `step` steps of the next.

    `epoch_state` (mid-epoch only): {"lr": the rate the epoch started at, "seconds": it trained}.
    """
    import keras

    folder = os.path.join(run_dir, DIRNAME)
    os.makedirs(folder, exist_ok=True)
    opt = model.optimizer
    weights = model.get_weights()
    arrays = {f"w{i}": w for i, w in enumerate(weights)}
    arrays.update({f"o{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(opt.variables)})
    meta = {"epochs_done": epochs_done, "step": step, "steps_per_epoch": steps_per_epoch, "history": history,
            "num_weights": len(weights), "optimizer_variables": [v.path for v in opt.variables]}
    if step:
        mvars = model.metrics_variables
        arrays.update({f"m{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(mvars)})
        meta.update(metrics_variables=[v.path for v in mvars], epoch=epoch_state or {})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    needed = sum(a.nbytes for a in arrays.values()) + PER_ARRAY * (len(arrays) + 1)
    writes.atomic(path(run_dir), lambda f: np.savez(f, **arrays), needed=needed)


def estimate_bytes(model, epochs):
    """About how large a checkpoint of `model` (compiled, optimizer built) is: every array's bytes,
    the .npz overhead, and the record with `epochs` history rows (an upper bound: a few kB over)."""
    variables = list(model.weights) + list(model.optimizer.variables) + list(model.metrics_variables)
    data = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)
    row = 8 * 40 + 160  # eight fields of up to 40 characters, keys and punctuation
    record = 1024 + epochs * row + sum(len(v.path) + 4 for v in variables)
    return data + record + PER_ARRAY * (len(variables) + 1)


def read_meta(run_dir):
    """The checkpoint's record only (no arrays read), or None when there is none, it is
    unreadable, or its record fails `check_meta`."""
    p = path(run_dir)
    try:
        data.check_npz_sizes(p)
        with np.load(p, allow_pickle=False) as f:
            return check_meta(p, json.loads(f["meta"].tobytes().decode()))
    except Exception:  # missing or torn: the caller only describes what it can
        return None


def load(run_dir, epochs=None):
    """(meta, weights, optimizer arrays), or None when no checkpoint was written yet.

    Read as untrusted: every array's declared size is checked against what its member
    holds before numpy allocates it (`data.check_npz_sizes`), and the record against
    `check_meta` (`epochs`: the run's, the most epochs_done can be). Shapes and dtypes
    are checked against the model in `restore`. A mid-epoch checkpoint's metric arrays
    are in meta["metrics_arrays"]; checkpoints from before mid-epoch ones read as step 0.
    """
    p = path(run_dir)
    if not os.path.exists(p):
        return None
    try:
        data.check_npz_sizes(p)
        with np.load(p, allow_pickle=False) as f:
            meta = check_meta(p, json.loads(f["meta"].tobytes().decode()), epochs)
            weights = [f[f"w{i}"] for i in range(meta["num_weights"])]
            opt = [f[f"o{i}"] for i in range(len(meta["optimizer_variables"]))]
            meta["metrics_arrays"] = [f[f"m{i}"] for i in range(len(meta.get("metrics_variables", [])))]
    except TlresError:
        raise
    except Exception as e:
        raise TlresError(f"{p}: unreadable checkpoint ({brief(e)}); "
                         "start a new run with --out") from e
    return meta, weights, opt


def _count(value, high):
    return type(value) is int and 0 <= value <= high


def check_meta(p, meta, epochs=None):
    """The checkpoint record `meta` with step defaulted to 0, checked for what `load` and a resume
    read: epochs_done 0..epochs, step 0..steps_per_epoch-1 (0 once every epoch is done), the
    array counts and names; one line otherwise."""
    def bad(what):
        return TlresError(f"{p}: not a checkpoint tlres wrote ({what}); start a new run with --out")

    if not isinstance(meta, dict):
        raise bad("its record is not a JSON object")
    meta.setdefault("step", 0)
    done, step, per = meta.get("epochs_done"), meta["step"], meta.get("steps_per_epoch")
    top = epochs if epochs is not None else 10 ** 6
    if not _count(done, top):
        raise bad(f"epochs_done must be an integer 0..{top}, got {done!r}")
    if per is not None and not (_count(per, 2 ** 40) and per > 0):
        raise bad(f"steps_per_epoch must be a positive integer, got {per!r}")
    if not _count(step, (per or 2 ** 40) - 1) or (step and done == top):
        raise bad(f"step must be an integer 0..{(per or 2 ** 40) - 1} and 0 after the last epoch, got {step!r}")
    names = [meta.get(k, []) for k in ("optimizer_variables", "metrics_variables")]
    if not _count(meta.get("num_weights"), 100_000) or not all(
            isinstance(n, list) and len(n) <= 100_000 and all(isinstance(x, str) for x in n) for n in names):
        raise bad("num_weights and the variable name lists are not a count and lists of names")
    if not isinstance(meta.get("history"), list) or not all(isinstance(r, dict) for r in meta["history"]):
        raise bad("history is not a list of rows")
    if step and not isinstance(meta.get("epoch", {}), dict):
        raise bad("the epoch in progress is not a record")
    return meta


def _arrays_fit(what, arrays, variables):
    """One line unless `arrays` match `variables` (Keras variables) in number, shape and dtype."""
    if len(arrays) != len(variables):
        raise TlresError(f"the checkpoint's {what} do not match this model ({len(arrays)} arrays for "
                         f"{len(variables)} variables); start a new run with --out")
    for a, v in zip(arrays, variables):
        if tuple(a.shape) != tuple(v.shape) or np.dtype(a.dtype) != np.dtype(v.dtype):
            raise TlresError(f"the checkpoint's {what} do not match this model: {_local(v.path)} is "
                             f"{v.dtype} {tuple(v.shape)}, the checkpoint holds {a.dtype} {tuple(a.shape)}; "
                             "start a new run with --out")


def _local(path):
    return path.split("/", 1)[-1]


def restore(model, ckpt):
    """Put a loaded checkpoint's weights and optimizer state into a compiled model."""
    meta, weights, opt_arrays = ckpt
    _arrays_fit("weights", weights, model.weights)
    model.set_weights(weights)
    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    # Keras names optimizers uniquely per process (adam, adam_1, ...): compare paths without it
    names = [_local(v.path) for v in opt.variables]
    if names != [_local(n) for n in meta["optimizer_variables"]]:
        raise TlresError("the checkpoint's optimizer state does not match this model "
                         f"({len(meta['optimizer_variables'])} vs {len(names)} variables)")
    _arrays_fit("optimizer state", opt_arrays, opt.variables)
    for v, a in zip(opt.variables, opt_arrays):
        v.assign(a)


def restore_metrics(model, meta):
    """Put a mid-epoch checkpoint's metric variables back (after `fit` reset them for the epoch)."""
    mvars = model.metrics_variables
    names = [_local(v.path) for v in mvars]
    if names != [_local(n) for n in meta["metrics_variables"]]:
        raise TlresError("the checkpoint's metric state does not match this model "
                         f"({len(meta['metrics_variables'])} vs {len(names)} variables)")
    _arrays_fit("metric state", meta["metrics_arrays"], mvars)
    for v, a in zip(mvars, meta["metrics_arrays"]):
        v.assign(a)
