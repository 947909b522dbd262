"""Epoch-end checkpoints: one file, written atomically, enough to resume exactly.

`RUN/ckpt/checkpoint.npz` holds the model's weights (BatchNorm statistics
included), every optimizer variable (iteration count, learning rate, moments)
and a JSON record: the number of finished epochs and their history rows. The
data order and augmentation need no saved state: they are a pure function of
(seed, epoch) (`tlres.pipeline`). The file is written to a temporary name,
flushed to disk and renamed over the old one, so a kill at any moment leaves
either the previous checkpoint or the new one, never a mix.

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

from tlres.errors import TlresError

DIRNAME, FILENAME = "ckpt", "checkpoint.npz"


def path(run_dir):
    return os.path.join(run_dir, DIRNAME, FILENAME)


def save(run_dir, model, epochs_done, history):
    import keras

    folder = os.path.join(run_dir, DIRNAME)
    os.makedirs(folder, exist_ok=True)
    opt = model.optimizer
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    arrays.update({f"o{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(opt.variables)})
    meta = {"epochs_done": epochs_done, "history": history,
            "num_weights": len(model.get_weights()), "optimizer_variables": [v.path for v in opt.variables]}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    final = path(run_dir)
    tmp = final + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)


def load(run_dir):
    """(meta, weights, optimizer arrays), or None when no epoch has finished yet."""
    p = path(run_dir)
    if not os.path.exists(p):
        return None
    try:
        with np.load(p, allow_pickle=False) as f:
            meta = json.loads(f["meta"].tobytes().decode())
            weights = [f[f"w{i}"] for i in range(meta["num_weights"])]
            opt = [f[f"o{i}"] for i in range(len(meta["optimizer_variables"]))]
    except Exception as e:
        raise TlresError(f"{p}: unreadable checkpoint ({type(e).__name__}: {e}); "
                         "start a new run with --out") from e
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
