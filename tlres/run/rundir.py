"""The run directory: `RunDir` owns its file names, readers and writers; when one may be
created, overwritten or resumed (`check_out`, `create_out`, `resumed_config`), reused
(`finished_with`), and the fix-ups that let older runs still read (`recorded`).

`tlres.run.train` (Keras) and `tlres.reference.torch` (PyTorch) write the same directory and
`tlres.analysis.results` reads both through `RunDir`. Every file, and what `--overwrite`
removes (only what the marker `.tlres-run.json` names, `stranger`):
docs/results.md, "The run directory".
"""

import csv
import dataclasses
import io
import json
import os
import shutil
import socket
import time

import numpy as np

from tlres.core import plots
from tlres.net.modelfile import MODEL_FILE as MODEL_KERAS
from tlres.run import checkpoint, writes
from tlres.core.config import COMPUTES, Config, halves
from tlres.core.errors import TlresError, brief, quote

CONFIG, STATUS, HISTORY = "config.json", "status.json", "history.csv"
METRICS, PREDICTIONS, SPLIT_FILE = "metrics.json", "predictions.csv", "split.csv"
MODEL_PT = "model.pt"  # the PyTorch reference's model (a torch state dict), for MODEL_KERAS
FIGURES = plots.RUN_FIGURES  # what plots.run_figures writes
CHECKPOINT = f"{checkpoint.DIRNAME}/{checkpoint.FILENAME}"
RUN_FILES = (CONFIG, STATUS, HISTORY, CHECKPOINT, MODEL_KERAS, MODEL_PT,
             METRICS, PREDICTIONS, SPLIT_FILE) + tuple(FIGURES)
"""What a run writes in its directory (either framework's): its marker names them from the start."""
HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                  "val_mean_class_accuracy", "lr", "seconds")

REFERENCE = {"limit_train": None, "limit_test": None, "draws": "torch", "init_sha256": None}
"""A PyTorch reference run's "reference" record (config.json) on the whole data, with
torchvision's draws and its own initialisation; a key an older record lacks had this value."""


def _named(name):
    """A `RunDir` property: the path of its file `name`."""
    return property(lambda self: self.file(name), doc=f"the path of {name}")


class RunDir:
    """One run directory: where each of its files is, and their readers and writers."""

    def __init__(self, path):
        self.path = path

    def file(self, name):
        return os.path.join(self.path, name)

    def has(self, name):
        return os.path.exists(self.file(name))

    config, status, history = _named(CONFIG), _named(STATUS), _named(HISTORY)
    metrics, predictions, split = _named(METRICS), _named(PREDICTIONS), _named(SPLIT_FILE)
    model_keras, model_pt, ckpt = _named(MODEL_KERAS), _named(MODEL_PT), _named(CHECKPOINT)

    def read_config(self):
        """config.json's record; OSError or ValueError when it cannot be read."""
        return _read_json(self.config)

    def read_status(self):
        """status.json's record; OSError or ValueError when it cannot be read."""
        return _read_json(self.status)

    def write_config(self, record):
        write_json(self.config, record)

    def write_metrics(self, metrics):
        write_json(self.metrics, metrics)

    def write_history(self, rows):
        write_history(self.history, rows)

    def write_predictions(self, logits, labels):
        write_predictions(self.predictions, logits, labels)

    def write_split(self, rows):
        write_split(self.split, rows)

    def write_status(self, record):
        write_json(self.status, record)

    def write_running(self, start_epoch=0, start_step=None):
        """The run is under way in this process (`alive` checks it); `start_step`, the step within
        epoch start_epoch + 1 it resumed at, is left out when None (the reference records none)."""
        record = {"state": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "pid": os.getpid(), "host": socket.gethostname(), "start_epoch": start_epoch}
        if start_step is not None:
            record["start_step"] = start_step
        self.write_status(record)

    def write_failed(self, exc, **where):
        """The run stopped on `exc`; `where`: how far it got (epochs_done, step)."""
        self.write_status({"state": "failed", "error": brief(exc, 1000), **where})

    def write_finished(self, epochs_done, resumed_from_epoch, train_seconds, total_seconds):
        self.write_status({"state": "finished", "epochs_done": epochs_done,
                           "resumed_from_epoch": resumed_from_epoch,
                           "train_seconds": round(train_seconds, 2),
                           "total_seconds": round(total_seconds, 2)})

    def create(self):
        return create_out(self.path)

    def clear(self, under=""):
        clear(self.path, under)

    def remove(self):
        remove(self.path)


def _read_json(path):
    with open(path) as f:
        return json.load(f)


# --- the writers (by path: a run directory's through `RunDir`) ---

def write_json(path, obj):
    writes.atomic_text(path, json.dumps(obj, indent=2) + "\n")


def write_split(path, rows):
    """split.csv of an image folder: which file is which training or test row (or was skipped).
    Class and path are text cells (`writes.csv_text`: a leading =, +, -, @, tab or CR is escaped)."""
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["split", "index", "class", "path"])
    w.writerows([split, index, writes.csv_text(name), writes.csv_text(path)]
                for split, index, name, path in rows)
    writes.atomic_text(path, f.getvalue())


def write_history(path, rows):
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, HISTORY_FIELDS)
    w.writeheader()
    w.writerows(rows)
    writes.atomic_text(path, f.getvalue())


def write_predictions(path, logits, labels):
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    pred = logits.argmax(axis=1)
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["index", "label", "prediction", "confidence"])
    for i, (y, p) in enumerate(zip(labels, pred)):
        w.writerow([i, int(y), int(p), f"{probs[i, p]:.6f}"])
    writes.atomic_text(path, f.getvalue())


def alive(status):
    """Whether the process a status record names (pid, host) still runs, on this machine."""
    if status.get("host") != socket.gethostname() or not status.get("pid"):
        return False
    if status["pid"] == os.getpid():
        return False
    try:
        os.kill(status["pid"], 0)
    except OSError:
        return False
    try:  # a killed child its parent has not reaped yet is not running it
        with open(f"/proc/{status['pid']}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


# --- older run directories ---

RECORDED_BEFORE = {"conv": "xla"}  # a field whose value in runs from before it existed is not its default


def recorded(saved):
    """A run's recorded settings (config.json's "config") as this tlres reads them: a field
    added to `Config` since has what that run had, its `RECORDED_BEFORE` value (runs from before
    --conv used XLA's kernel), else its default. The one place older runs are fixed up."""
    out = dict(saved)
    for f in dataclasses.fields(Config):
        if f.name not in out:
            out[f.name] = RECORDED_BEFORE.get(f.name, json.loads(json.dumps(f.default)))
    return out


# --- create, overwrite, resume, reuse ---

def default_out(cfg):
    return cfg.out or os.path.join("runs", f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}")


def _entries(run_dir, owned, rel=""):
    """(path relative to `run_dir`, whose, is a folder) of every entry under it, sorted, children
    before their folder. whose: True for what the marker `owned` names (a file, or the `.tmp`
    file or folder it was written through), None for a folder made to hold such files, else False."""
    for e in sorted(os.scandir(os.path.join(run_dir, rel)), key=lambda e: e.name):
        p, link = rel + e.name, e.is_symlink()
        folder = e.is_dir(follow_symlinks=False)
        temp = p.endswith(writes.TMP) and (p in owned or p[:-len(writes.TMP)] in owned)
        if not link and (temp or (p in owned or p == writes.MARKER) and not folder):
            yield p, True, folder
        elif folder and not link and any(o.startswith(p + "/") for o in owned):
            yield from _entries(run_dir, owned, p + "/")
            yield p, None, True
        else:
            yield p, False, folder


def stranger(run_dir, label=None):
    """The first file or folder in `run_dir` that its marker does not say tlres wrote (a link
    always is one), or None; raises TlresError (its line starts with `label`) when it carries
    no marker."""
    owned = writes.read_marker(run_dir)
    if owned is None:
        first = quote(sorted(os.listdir(run_dir))[0]) if os.listdir(run_dir) else "nothing"
        raise TlresError(f"{label or run_dir}: holds {first} and no {writes.MARKER}, the record of "
                         "what tlres wrote there (a folder tlres did not create, or a run from an older "
                         "tlres), so tlres will not delete anything in it; delete it yourself or choose "
                         "another path")
    return next((p for p, whose, _ in _entries(run_dir, owned) if whose is False), None)


def clear(run_dir, under=""):
    """Remove what `run_dir`'s marker names (under the folder `under` only, when given) and the
    folders made to hold it, once empty; nothing else, and nothing where there is no marker."""
    owned = writes.read_marker(run_dir)
    if owned is None or not os.path.isdir(os.path.join(run_dir, under)):
        return
    for p, whose, folder in _entries(run_dir, owned, under and under.rstrip("/") + "/"):
        path = os.path.join(run_dir, p)
        try:
            if whose and folder:
                shutil.rmtree(path)
            elif whose:
                os.remove(path)
            elif whose is None:
                os.rmdir(path)
        except OSError:
            pass  # a folder that still holds someone's file stays, with it
    if under:
        try:
            os.rmdir(os.path.join(run_dir, under))
        except OSError:
            pass


def remove(run_dir):
    """Remove a run directory tlres created: what its marker names, then the folder if empty."""
    clear(run_dir)
    try:
        os.rmdir(run_dir)
    except OSError:
        pass


def check_out(out, overwrite=False, flag="--out"):
    """Refuse an --out (or the folder of another `flag`) we must not or cannot write, before anything
    is created."""
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise TlresError(f"{flag} {out}: exists and is not a directory; choose another path")
        if os.listdir(out):
            if not overwrite:
                raise TlresError(f"{flag} {out}: exists and is not empty; choose another directory, "
                                 "pass --overwrite to replace a previous run, or --resume it")
            first = stranger(out, f"{flag} {out}")
            if first is not None:
                raise TlresError(f"{flag} {out}: {quote(first)} is not a file tlres wrote, so --overwrite "
                                 "will not delete anything there; move it out or choose another path")
        if not os.access(out, os.W_OK):
            raise TlresError(f"{flag} {out}: not writable; choose another directory")
        return
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise TlresError(f"{flag} {out}: {parent} is a file, not a directory; choose another path")
    if not os.access(parent, os.W_OK):
        raise TlresError(f"{flag} {out}: cannot create it, {parent} is not writable; choose another path")


def create_out(out):
    """Create (or, after `check_out(overwrite=True)`, empty of what tlres wrote) the run directory
    and give it its marker (`RUN_FILES`), which also tests that it can be written; True if new."""
    existed = os.path.exists(out)
    try:
        if existed and os.listdir(out):
            clear(out)
            existed = False
        os.makedirs(out, exist_ok=True)
        writes.mark(out, RUN_FILES)
    except (OSError, TlresError) as e:
        if not existed and os.path.isdir(out):
            remove(out)
        if isinstance(e, TlresError):  # a full disk: its own line
            raise
        raise TlresError(f"--out {out}: cannot write there ({e.strerror}); choose another path") from e
    return not existed


def resumed_config(run_dir):
    """The Config of the run in `run_dir`, checked to be resumable: config.json and status.json
    are read as untrusted (`check_record`), so a damaged or edited one is one line."""
    if not os.path.isdir(run_dir):
        raise TlresError(f"--resume {run_dir}: no such run directory")
    try:
        record, status = RunDir(run_dir).read_config(), RunDir(run_dir).read_status()
    except (OSError, ValueError, RecursionError) as e:
        raise TlresError(f"--resume {run_dir}: not a tlres run directory with a readable "
                         f"config.json and status.json ({brief(e)})") from e
    cfg = check_record(run_dir, record, status)
    if status.get("state") == "finished":
        raise TlresError(f"--resume {run_dir}: that run already finished; nothing to resume")
    if status.get("state") == "running" and alive(status):
        raise TlresError(f"--resume {run_dir}: process {status['pid']} on this machine is still "
                         "running it; stop it first")
    return cfg.replace(out=run_dir)


STATES = ("running", "finished", "failed", "interrupted")
COUNTS = {"num_train": 1, "num_test": 1, "num_classes": 1}  # config.json's "dataset": each >= this


def check_record(run_dir, record, status):
    """The Config recorded in config.json, every field checked for type and range
    (`Config.validate`), and the other parts a resume reads (dataset counts, process count,
    status state and pid): one line naming the first bad value."""
    where = f"--resume {run_dir}: config.json"
    saved = record.get("config") if isinstance(record, dict) else None
    if not isinstance(saved, dict) or "data" not in saved:
        raise TlresError(f"{where} has no \"config\" record with the run's settings; not a tlres run directory")
    names = {f.name for f in dataclasses.fields(Config)}
    cfg = Config(**{k: v for k, v in recorded(saved).items() if k in names}).validate(where)
    dataset = record.get("dataset")
    for key, low in COUNTS.items():
        value = dataset.get(key) if isinstance(dataset, dict) else None
        if type(value) is not int or value < low:
            raise TlresError(f"{where}: dataset.{key} must be an integer >= {low}, got {value!r}")
    device = record.get("device", {})
    procs = device.get("processes", 1) if isinstance(device, dict) else None
    if type(procs) is not int or not 0 < procs <= 2 ** 16:
        raise TlresError(f"{where}: device.processes must be an integer 1..65536, got {procs!r}")
    state = status.get("state") if isinstance(status, dict) else None
    if state not in STATES:
        raise TlresError(f"--resume {run_dir}: status.json's state must be one of {', '.join(STATES)}, "
                         f"got {state!r}")
    pid, host = status.get("pid"), status.get("host")
    if not (pid is None or type(pid) is int and 0 < pid < 2 ** 31) or not (host is None or isinstance(host, str)):
        raise TlresError(f"--resume {run_dir}: status.json's pid and host must be a positive integer and "
                         f"a string, got {pid!r} and {host!r}")
    return cfg


def finished_with(run_dir, cfg, reference=None):
    """Whether `run_dir` holds a finished run of what `cfg` computes (how it was executed,
    `config.EXECUTION_FIELDS`, aside) in the same framework: such a run is reused, not trained again.

    `reference`: the run must be the PyTorch reference's, on the whole data, made with these
    of its settings (e.g. {"draws": "tlres", "init_sha256": ...}; the others as `REFERENCE`).
    """
    try:
        if RunDir(run_dir).read_status().get("state") != "finished":
            return False
        record = RunDir(run_dir).read_config()
        want = halves(json.loads(json.dumps(dataclasses.asdict(cfg))))[COMPUTES]
        saved = halves(recorded(record["config"]))[COMPUTES]  # a setting added since: its default
        if saved != want:  # e.g. a moved grid, or one run on another kernel, is still the same grid
            return False
        if reference is None:  # a Keras run: a PyTorch reference run of the same settings is not one
            return record.get("framework", "keras-jax") != "pytorch"
        got = record.get("reference") or {}
        return record.get("framework") == "pytorch" and all(
            got.get(k, REFERENCE.get(k)) == v for k, v in {**REFERENCE, **reference}.items())
    except (OSError, ValueError, KeyError):
        return False
