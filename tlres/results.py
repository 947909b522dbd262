"""Framework-neutral results: one schema for tlres runs, other frameworks and the paper.

A *result* is a dict (JSON-ready), schema `tlres.results/1`:

    schema       "tlres.results/1"
    name         a label: the grid cell, the preset, or the file's own name
    source       where it was read from
    framework    {"name": "keras-jax" | "pytorch" | ..., "versions": {package: version}}
    device       free-form description of the accelerator/CPU
    config       the resolved settings (tlres: every Config field)
    dataset      {"name", "num_train", "num_test", "num_classes", "class_names"} (what is known)
    history      [{"epoch": 1, "loss", "accuracy", "val_loss", "val_accuracy",
                   "val_mean_class_accuracy", "lr", "seconds"}, ...] (missing keys allowed)
    metrics      final whole-test-split metrics, as tlres' metrics.json (at least
                 "accuracy" and "num_test")
    predictions  {"index": [...], "label": [...], "prediction": [...]} keyed by
                 test-set index, or null

`load(source)` reads a tlres run directory (or the PyTorch reference's, which
writes the same files), a directory of run directories (a grid), a results
JSON file (one result or a list), or `paper` (experiments/paper.json).
"""

import csv
import json
import os
import re

from tlres.errors import TlresError

SCHEMA = "tlres.results/1"
PAPER_JSON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "experiments", "paper.json")


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise TlresError(f"{path}: cannot read it ({e.strerror})") from None
    except ValueError as e:
        raise TlresError(f"{path}: not valid JSON ({e})") from None


def _number(text):
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return int(v) if v.is_integer() and "." not in str(text) and "e" not in str(text).lower() else v


def read_history(path):
    """history.csv -> list of {column: number}; empty cells become None."""
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def read_predictions(path):
    """predictions.csv (index,label,prediction[,confidence]) -> {"index", "label", "prediction"}."""
    out = {"index": [], "label": [], "prediction": []}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"index", "label", "prediction"} - set(reader.fieldnames or [])
        if missing:
            raise TlresError(f"{path}: needs columns index,label,prediction; missing {', '.join(sorted(missing))}")
        for row in reader:
            for k in out:
                out[k].append(int(row[k]))
    return out


def is_run_dir(path):
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "metrics.json"))


def run_name(path, cfg):
    """Grid runs (<grid>/<cell>/seed<k>) are named by their cell, others by preset or directory."""
    path = os.path.normpath(os.path.abspath(path))
    if re.fullmatch(r"seed\d+", os.path.basename(path)):
        return os.path.basename(os.path.dirname(path))
    return (cfg.get("config") or {}).get("preset") or os.path.basename(path)


def from_run_dir(path):
    """The result of one finished run directory (tlres.train or tlres.reference.torch)."""
    if not is_run_dir(path):
        state = ""
        if os.path.exists(os.path.join(path, "status.json")):
            state = f" (status: {_read_json(os.path.join(path, 'status.json')).get('state')})"
        raise TlresError(f"{path}: not a finished run, no metrics.json{state}")
    cfg = _read_json(os.path.join(path, "config.json")) if os.path.exists(
        os.path.join(path, "config.json")) else {}
    hist = os.path.join(path, "history.csv")
    preds = os.path.join(path, "predictions.csv")
    framework = cfg.get("framework", "keras-jax")
    dataset = cfg.get("dataset")
    if not isinstance(dataset, dict):
        dataset = {"name": dataset}
    return {
        "schema": SCHEMA,
        "name": run_name(path, cfg),
        "source": path,
        "framework": framework if isinstance(framework, dict) else
        {"name": framework, "versions": cfg.get("versions", {})},
        "device": cfg.get("device"),
        "config": cfg.get("config", {}),
        "dataset": dataset,
        "history": read_history(hist) if os.path.exists(hist) else [],
        "metrics": _read_json(os.path.join(path, "metrics.json")),
        "predictions": read_predictions(preds) if os.path.exists(preds) else None,
    }


def check(result, where):
    """Refuse a results object that is not schema 1 or lacks the final accuracy."""
    schema = result.get("schema", "")
    if not str(schema).startswith("tlres.results/"):
        raise TlresError(f"{where}: not a tlres results file (no \"schema\": \"{SCHEMA}\")")
    if schema != SCHEMA:
        raise TlresError(f"{where}: schema {schema} is not supported; this tlres reads {SCHEMA}")
    m = result.get("metrics") or {}
    if "accuracy" not in m or "num_test" not in m:
        raise TlresError(f"{where}: metrics need at least accuracy and num_test")
    result.setdefault("history", [])
    result.setdefault("predictions", None)
    result.setdefault("source", where)
    return result


def from_file(path):
    obj = _read_json(path)
    items = obj if isinstance(obj, list) else [obj]
    return [check(r, f"{path}[{i}]" if isinstance(obj, list) else path) for i, r in enumerate(items)]


def paper(path=PAPER_JSON):
    """The paper's two numbers as results: n = 64 test images, no history or predictions."""
    p = _read_json(path)
    out = []
    for key in ("baseline", "improved"):
        e = p[key]
        out.append({
            "schema": SCHEMA, "name": f"paper {key}", "source": path,
            "framework": {"name": p["framework"], "versions": {}}, "device": p["gpu"],
            "config": {"epochs": p["epochs"], "batch_size": p["batch_size"]},
            "dataset": {"name": p["dataset"]}, "history": [], "predictions": None,
            "metrics": {"accuracy": e["accuracy"] / 100, "correct": e["correct"],
                        "num_test": p["n_test"]},
        })
    return out


def load(source):
    """Every result in `source` (see module docstring), in a stable order."""
    if source == "paper":
        return paper()
    if os.path.isfile(source):
        return from_file(source)
    if not os.path.isdir(source):
        raise TlresError(f"{source}: no such run directory or results file (or say `paper`)")
    if is_run_dir(source) or os.path.exists(os.path.join(source, "config.json")):
        return [from_run_dir(source)]
    found = []
    for root, dirs, _files in os.walk(source):
        dirs.sort()
        if is_run_dir(root):
            found.append(from_run_dir(root))
            dirs[:] = []
    if not found:
        raise TlresError(f"{source}: holds no finished run (no metrics.json below it)")
    return found


def group(results):
    """{name: [results]} in first-seen order."""
    out = {}
    for r in results:
        out.setdefault(r["name"], []).append(r)
    return out


def write(result, path):
    with open(path, "w") as f:
        json.dump(check(dict(result), path), f, indent=1)
        f.write("\n")
