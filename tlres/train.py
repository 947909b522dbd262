"""The one runner: `run(cfg)` trains, evaluates and writes a run directory.

Every experiment (presets, ablation cells, the quick run) goes through here:

    data.load -> model.build -> compile(loss, optimizer, schedule)
      -> model.fit(tf.data pipeline, per-epoch validation on the whole test split)
      -> metrics.json, predictions.csv, history.csv, figures

Run directory (see README "Results"):
    config.json       every resolved setting, versions, device
    status.json       {"state": "running" | "finished" | "failed", ...}
    history.csv       one row per epoch, written as each epoch ends
    metrics.json      final whole-test-split metrics (only once finished)
    predictions.csv   index,label,prediction,confidence per test image
    accuracy.png, loss.png, confusion.png
"""

import csv
import dataclasses
import json
import os
import sys
import time

from tlres.errors import TlresError

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                  "val_mean_class_accuracy", "lr", "seconds")


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def versions():
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("tlres", "keras", "jax", "jaxlib", "numpy", "tensorflow-cpu", "tensorflow",
                "tensorflow-datasets"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def device():
    import jax

    devs = jax.devices()
    return {"platform": devs[0].platform, "kind": devs[0].device_kind, "count": len(devs)}


def prepare_out(cfg):
    """Create the run directory; refuse to mix results into an existing one."""
    out = cfg.out or os.path.join("runs", f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    if os.path.exists(out) and os.listdir(out):
        raise TlresError(f"--out {out}: exists and is not empty; choose another directory")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise TlresError(f"--out {out}: cannot create it ({e.strerror})") from e
    if not os.access(out, os.W_OK):
        raise TlresError(f"--out {out}: not writable")
    return out


def make_optimizer(cfg, learning_rate):
    import keras

    wd = cfg.weight_decay or None
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=cfg.momentum, weight_decay=wd)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate, weight_decay=wd)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=cfg.weight_decay)
    raise TlresError(f"unknown optimizer {cfg.optimizer!r}")


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
        dist = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(dist)


def _epoch_callback(cfg, out, x_eval, n_eval, y_eval, num_classes, loss_fn, state):
    """Per-epoch validation on the whole test split, the lr, and history.csv."""
    import keras

    from tlres import evaluate, schedules

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.lr = schedules.current_lr(self.model.optimizer)
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.start
            logits = evaluate.predict_logits(self.model, x_eval, n_eval, cfg.batch_size)
            m = evaluate.metrics(logits, y_eval, num_classes, loss_fn)
            logs.update(val_loss=m["loss"], val_accuracy=m["accuracy"],
                        val_mean_class_accuracy=m["mean_class_accuracy"], lr=self.lr)
            state["logits"], state["metrics"] = logits, m
            row = {"epoch": epoch + 1, "seconds": round(seconds, 3),
                   **{k: logs.get(k) for k in HISTORY_FIELDS if k not in ("epoch", "seconds")}}
            state["history"].append(row)
            path = os.path.join(out, "history.csv")
            with open(path, "a", newline="") as f:
                w = csv.DictWriter(f, HISTORY_FIELDS)
                if epoch == 0:
                    w.writeheader()
                w.writerow(row)

    return EpochEnd()


def run(cfg, verbose=None):
    """Train and evaluate `cfg`; returns the run directory."""
    from tlres import backend

    backend.require_jax()
    if cfg.compile_cache:
        backend.enable_compile_cache()
    out = prepare_out(cfg)
    status = os.path.join(out, "status.json")
    _write_json(status, {"state": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    try:
        return _run(cfg, out, verbose)
    except BaseException as e:
        _write_json(status, {"state": "failed", "error": f"{type(e).__name__}: {e}"})
        raise


def _run(cfg, out, verbose):
    import keras

    from tlres import data, evaluate, losses, model as model_lib, pipeline, report, schedules

    t0 = time.perf_counter()
    ds = data.load(cfg.data, cfg.data_dir, cfg.image_size)
    _write_json(os.path.join(out, "config.json"), {
        "config": dataclasses.asdict(cfg), "dataset": {
            "name": ds.name, "num_train": len(ds.x_train), "num_test": len(ds.x_test),
            "num_classes": ds.num_classes, "class_names": list(ds.class_names)},
        "versions": versions(), "device": device(), "pipeline": pipeline.resolve(cfg.pipeline)})
    print(f"tlres: {cfg.preset} preset on {ds.name} ({len(ds.x_train)} train / {len(ds.x_test)} test, "
          f"{ds.num_classes} classes), {cfg.epochs} epochs, batch {cfg.batch_size}, "
          f"weights={cfg.weights}, device={device()['kind']}, "
          f"pipeline={pipeline.resolve(cfg.pipeline)}, {cfg.precision} -> {out}", flush=True)

    setup_engine(cfg)
    train_ds = pipeline.train_data(ds.x_train, ds.y_train, cfg)
    steps = len(ds.x_train) // cfg.batch_size
    x_eval, n_eval = pipeline.eval_arrays(ds.x_test, cfg.batch_size, cfg.input_norm)
    net = model_lib.build(ds.num_classes, cfg)
    lr, callbacks = schedules.learning_rate(cfg, steps)
    loss_fn = losses.SmoothedCrossEntropy(ds.num_classes, cfg.label_smoothing, cfg.smoothing_form)
    net.compile(optimizer=make_optimizer(cfg, lr), loss=loss_fn,
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    eval_loss = losses.SmoothedCrossEntropy(ds.num_classes, cfg.label_smoothing,
                                            cfg.smoothing_form, reduction=None)
    state = {"history": []}
    callbacks.append(_epoch_callback(cfg, out, x_eval, n_eval, ds.y_test, ds.num_classes,
                                     eval_loss, state))
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    t_fit = time.perf_counter()
    net.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=verbose)
    fit_seconds = time.perf_counter() - t_fit

    m = state["metrics"]  # the last epoch's validation is the final evaluation
    m.update(epochs=cfg.epochs, train_seconds=round(fit_seconds, 2),
             total_seconds=round(time.perf_counter() - t0, 2),
             class_names=list(ds.class_names))
    _write_predictions(os.path.join(out, "predictions.csv"), state["logits"], ds.y_test)
    report.run_figures(out, state["history"], m, ds.class_names, title=f"{cfg.preset} ({ds.name})")
    _write_json(os.path.join(out, "metrics.json"), m)
    _write_json(os.path.join(out, "status.json"), {"state": "finished"})
    lo, hi = m["accuracy_ci95"]
    print(f"tlres: test accuracy {m['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}, n={m['num_test']}), "
          f"mean per-class accuracy {m['mean_class_accuracy']:.4f}, loss {m['loss']:.4f}; "
          f"{fit_seconds:.0f} s training -> {out}", flush=True)
    return out


def _write_predictions(path, logits, labels):
    import numpy as np

    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    pred = logits.argmax(axis=1)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "label", "prediction", "confidence"])
        for i, (y, p) in enumerate(zip(labels, pred)):
            w.writerow([i, int(y), int(p), f"{probs[i, p]:.6f}"])
