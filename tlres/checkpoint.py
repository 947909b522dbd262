"""Checkpoints: one file, written atomically, enough to resume exactly.

`RUN/ckpt/checkpoint.npz` holds the model's weights (BatchNorm statistics
included), every optimizer variable (iteration count, learning rate, moments)
and a JSON record: the number of finished epochs, their history rows, and the
step reached in the epoch in progress (0 at an epoch's end). A checkpoint in
the middle of an epoch (``--checkpoint-every``, or at a SIGTERM/SIGINT) also
holds the epoch's metric variables (the running sums behind its training loss
and accuracy), the learning rate it started at and the seconds it had trained,
so a resumed epoch ends with the same history row as an uninterrupted one.
The data order and augmentation need no saved state: epoch e's batch b is a
pure function of (seed, e, b) (`tlres.pipeline`). The file is written to a
temporary name, flushed to disk and renamed over the old one
(`tlres.writes.atomic`), so a kill at any moment leaves either the previous
checkpoint or the new one, never a mix; a full disk removes the temporary file
and keeps the previous checkpoint.

Why not Keras' `BackupAndRestore`: on Keras 3.15 / JAX it does restore the
weights, optimizer variables and the epoch (`model.save_weights` writes both,
and it sets `model._initial_epoch`), but it writes the weights and the epoch
record as two files in place (a kill between them pairs epoch k's weights
with epoch k-1's number), it knows nothing of our history rows, and it
restores inside `fit`, after our pipeline has already been built from epoch
0. We need the epoch before `fit` starts; so we keep one atomic file.
"""

import json
import os

import numpy as np

from tlres import writes
from tlres.errors import TlresError

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
    """The checkpoint's record only (no arrays read), or None when there is none or it is unreadable."""
    p = path(run_dir)
    try:
        with np.load(p, allow_pickle=False) as f:
            return json.loads(f["meta"].tobytes().decode())
    except Exception:  # missing or torn: the caller only describes what it can
        return None


def load(run_dir):
    """(meta, weights, optimizer arrays), or None when no checkpoint was written yet.

    A mid-epoch checkpoint's metric arrays are in meta["metrics_arrays"]; checkpoints
    from before mid-epoch checkpoints existed read as step 0.
    """
    p = path(run_dir)
    if not os.path.exists(p):
        return None
    try:
        with np.load(p, allow_pickle=False) as f:
            meta = json.loads(f["meta"].tobytes().decode())
            weights = [f[f"w{i}"] for i in range(meta["num_weights"])]
            opt = [f[f"o{i}"] for i in range(len(meta["optimizer_variables"]))]
            meta["metrics_arrays"] = [f[f"m{i}"] for i in range(len(meta.get("metrics_variables", [])))]
    except Exception as e:
        raise TlresError(f"{p}: unreadable checkpoint ({type(e).__name__}: {e}); "
                         "start a new run with --out") from e
    meta.setdefault("step", 0)
    return meta, weights, opt


def _local(path):
    return path.split("/", 1)[-1]


def restore(model, ckpt):
    """Put a loaded checkpoint's weights and optimizer state into a compiled model."""
    meta, weights, opt_arrays = ckpt
    model.set_weights(weights)
    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    # Keras names optimizers uniquely per process (adam, adam_1, ...): compare paths without it
    names = [_local(v.path) for v in opt.variables]
    if names != [_local(n) for n in meta["optimizer_variables"]]:
        raise TlresError("the checkpoint's optimizer state does not match this model "
                         f"({len(meta['optimizer_variables'])} vs {len(names)} variables)")
    for v, a in zip(opt.variables, opt_arrays):
        v.assign(a)


def restore_metrics(model, meta):
    """Put a mid-epoch checkpoint's metric variables back (after `fit` reset them for the epoch)."""
    mvars = model.metrics_variables
    names = [_local(v.path) for v in mvars]
    if names != [_local(n) for n in meta["metrics_variables"]]:
        raise TlresError("the checkpoint's metric state does not match this model "
                         f"({len(meta['metrics_variables'])} vs {len(names)} variables)")
    for v, a in zip(mvars, meta["metrics_arrays"]):
        v.assign(a)
