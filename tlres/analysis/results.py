"""Framework-neutral results: one schema, `tlres.results/1`, for tlres runs, other frameworks and the paper.

A *result* is a JSON-ready dict: schema, name, source, framework ({"name", "versions"}), device,
config, dataset, history (rows as history.csv's), metrics (at least "accuracy" and "num_test")
and predictions ({"index", "label", "prediction"} lists, or null). Every field:
docs/results.md, "Results files".

`load(source)` reads a run directory (either framework's, through `tlres.run.rundir.RunDir`),
a directory of run directories (a grid), a results JSON file (one result or a list), or
`paper` (experiments/paper.json).
"""

import csv
import json
import math
import os
import re

from tlres.run import evaluate, rundir, writes
from tlres.core.errors import TlresError, brief, quote

SCHEMA = "tlres.results/1"
PROG = "tlres results"
PAPER_JSON = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "experiments", "paper.json")


MAX_CLASSES = 1000  # results: the confusion matrix has C x C cells, so C is bounded


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise TlresError(f"{path}: cannot read it ({e.strerror})") from None
    except ValueError as e:  # UnicodeDecodeError included
        raise TlresError(f"{path}: not valid JSON ({' '.join(str(e).split())[:200]})") from None
    except RecursionError:
        raise TlresError(f"{path}: not a results file (JSON nested too deeply)") from None


def _json_object(path):
    obj = _read_json(path)
    if not isinstance(obj, dict):
        raise TlresError(f"{path}: expected a JSON object; found {_kind(obj)}")
    return obj


def _kind(v):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(v), "a number")


def _number(text):
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return int(v) if v.is_integer() and "." not in str(text) and "e" not in str(text).lower() else v


def _read_csv(path):
    """(header, rows as {column: text}, their line numbers); one TlresError line if unreadable."""
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            rows, lines = [], []
            for cells in reader:
                if not cells:
                    continue
                if len(cells) > len(header):
                    raise TlresError(f"{path}: line {reader.line_num} has {len(cells)} cells; "
                                     f"the header has {len(header)}")
                rows.append(dict(zip(header, cells + [None] * (len(header) - len(cells)))))
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TlresError(f"{path}: cannot read it as CSV ({brief(e)})") from None
    return header, rows, lines


def read_history(path):
    """history.csv -> list of {column: number}; empty cells become None."""
    return [{k: _number(v) for k, v in row.items()} for row in _read_csv(path)[1]]


def read_predictions(path):
    """predictions.csv (index,label,prediction[,confidence]) -> {"index", "label", "prediction"}."""
    out = {"index": [], "label": [], "prediction": []}
    header, rows, lines = _read_csv(path)
    missing = {"index", "label", "prediction"} - set(header)
    if missing:
        raise TlresError(f"{path}: needs columns index,label,prediction; missing {', '.join(sorted(missing))}")
    for row, line in zip(rows, lines):
        for k in out:
            try:
                out[k].append(int(row[k]))
            except (TypeError, ValueError):
                raise TlresError(f"{path}: line {line}: {k} must be an integer; found "
                                 f"{quote(row[k] or '', 40)}") from None
    return out


def is_run_dir(path):
    return os.path.isdir(path) and rundir.RunDir(path).has(rundir.METRICS)


def run_name(path, cfg):
    """Grid runs (<grid>/<cell>/seed<k>) are named by their cell, others by preset or directory."""
    path = os.path.normpath(os.path.abspath(path))
    if re.fullmatch(r"seed\d+", os.path.basename(path)):
        return os.path.basename(os.path.dirname(path))
    return (cfg.get("config") or {}).get("preset") or os.path.basename(path)


def from_run_dir(path):
    """The result of one finished run directory (tlres.run.train or tlres.reference.torch)."""
    run = rundir.RunDir(path)
    if not is_run_dir(path):
        state = ""
        if run.has(rundir.STATUS):
            state = f" (status: {quote(_json_object(run.status).get('state'), 40)})"
        raise TlresError(f"{path}: not a finished run, no {rundir.METRICS}{state}")
    cfg = _json_object(run.config) if run.has(rundir.CONFIG) else {}
    if not isinstance(cfg.get("config") or {}, dict) or not isinstance(
            (cfg.get("config") or {}).get("preset") or "", str):
        raise TlresError(f"{run.config}: config must be an object, its preset a string")
    framework = cfg.get("framework", "keras-jax")
    dataset = cfg.get("dataset")
    if not isinstance(dataset, dict):
        dataset = {"name": dataset}
    return check({
        "schema": SCHEMA,
        "name": run_name(path, cfg),
        "source": path,
        "framework": framework if isinstance(framework, dict) else
        {"name": framework, "versions": cfg.get("versions", {})},
        "device": cfg.get("device"),
        "config": cfg.get("config", {}),
        "dataset": dataset,
        "history": read_history(run.history) if run.has(rundir.HISTORY) else [],
        "metrics": _json_object(run.metrics),
        "predictions": read_predictions(run.predictions) if run.has(rundir.PREDICTIONS) else None,
    }, path)


def _is_number(v, lo=-math.inf, hi=math.inf, integer=False):
    """A JSON number (not a boolean), finite, in [lo, hi]; an int when `integer`."""
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        return False
    try:
        return math.isfinite(float(v)) and lo <= v <= hi
    except OverflowError:  # an int beyond float range
        return False


def check(result, where):
    """Refuse a result that is not schema 1, lacks the final accuracy, or has a field of the
    wrong kind; one line naming the field. Fills in the optional fields."""
    if not isinstance(result, dict):
        raise TlresError(f"{where}: a result must be a JSON object; found {_kind(result)}")
    schema = result.get("schema", "")
    if not str(schema).startswith("tlres.results/"):
        raise TlresError(f"{where}: not a tlres results file (no \"schema\": \"{SCHEMA}\")")
    if schema != SCHEMA:
        raise TlresError(f"{where}: schema {quote(schema, 40)} is not supported; this tlres reads {SCHEMA}")
    m = result.get("metrics") or {}
    if not isinstance(m, dict) or "accuracy" not in m or "num_test" not in m:
        raise TlresError(f"{where}: metrics need at least accuracy and num_test")

    def bad(field, rule):
        raise TlresError(f"{where}: {field} must be {rule}")

    if not _is_number(m["num_test"], 1, 2 ** 53, integer=True):
        bad("metrics.num_test", "a positive integer")
    if not _is_number(m["accuracy"], 0, 1):
        bad("metrics.accuracy", "a number in [0, 1]")
    if "correct" in m and not _is_number(m["correct"], 0, m["num_test"], integer=True):
        bad("metrics.correct", "an integer in [0, num_test]")
    for key in ("mean_class_accuracy", "loss"):
        if m.get(key) is not None and not _is_number(m[key], 0, 1 if key != "loss" else math.inf):
            bad(f"metrics.{key}", "a finite number" + (" in [0, 1]" if key != "loss" else " >= 0"))
    if not isinstance(m.get("confusion_matrix") or [], list) or len(m.get("confusion_matrix") or []) > MAX_CLASSES:
        bad("metrics.confusion_matrix", f"a list of at most {MAX_CLASSES} rows")
    if not isinstance(result.get("name"), str) or not result["name"]:
        bad("name", "a non-empty string")
    for key in ("framework", "config", "dataset"):
        if not isinstance(result.get(key) or {}, dict):
            bad(key, "an object")
    if not isinstance((result.get("framework") or {}).get("name") or "", str):
        bad("framework.name", "a string")
    if isinstance((result.get("config") or {}).get("seed"), (list, dict)):
        bad("config.seed", "a number or a string")
    num_classes = (result.get("dataset") or {}).get("num_classes")
    if num_classes is not None and not _is_number(num_classes, 1, MAX_CLASSES, integer=True):
        bad("dataset.num_classes", f"an integer from 1 to {MAX_CLASSES}")
    history = result.setdefault("history", []) or []
    if not isinstance(history, list) or not all(
            isinstance(row, dict) and all(v is None or _is_number(v) or (
                k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool))
                for k, v in row.items()) for row in history):
        bad("history", "a list of objects of numbers (finite epochs)")
    p = result.setdefault("predictions", None)
    if p is not None:
        if not (isinstance(p, dict) and all(isinstance(p.get(k), list) for k in ("index", "label", "prediction"))
                and len(p["index"]) == len(p["label"]) == len(p["prediction"]) > 0):
            bad("predictions", "index, label and prediction lists of one non-zero length")
        top = (num_classes or MAX_CLASSES) - 1
        if not all(_is_number(v, -2 ** 63, 2 ** 63 - 1, integer=True) for v in p["index"]) or not all(
                _is_number(v, 0, top, integer=True) for k in ("label", "prediction") for v in p[k]):
            bad("predictions", f"integers, with labels and predictions in 0..{top}")
    result.setdefault("source", where)
    return result


def from_file(path):
    obj = _read_json(path)
    items = obj if isinstance(obj, list) else [obj]
    return [check(r, f"{path}[{i}]" if isinstance(obj, list) else path) for i, r in enumerate(items)]


def paper(path=PAPER_JSON):
    """The paper's two numbers as results, once per reading of its test set (paper.json's
    `readings`): the 10,000 images it states, and one batch of 64 that its figures suggest.
    The group names say which, e.g. "paper improved (64, inferred)"."""
    p = _read_json(path)
    out = []
    for reading in p["readings"]:
        n = reading["n_test"]
        for key in ("baseline", "improved"):
            acc = p[key]["accuracy"]
            out.append({
                "schema": SCHEMA, "name": f"paper {key} ({reading['key']})", "source": path,
                "framework": {"name": p["framework"], "versions": {}}, "device": p["gpu"],
                "config": {"epochs": p["epochs"], "batch_size": p["batch_size"]},
                "dataset": {"name": p["dataset"]}, "history": [], "predictions": None,
                "metrics": {"accuracy": acc / 100, "correct": round(acc * n / 100), "num_test": n},
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
    if is_run_dir(source) or rundir.RunDir(source).has(rundir.CONFIG):
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


def data_of(result):
    """(dataset name or None, test-set size): what a result was evaluated on."""
    name = (result.get("dataset") or {}).get("name")
    n = (result.get("metrics") or {}).get("num_test")
    return (str(name) if name else None, int(n) if n is not None else None)


def _name_key(name):
    return re.sub(r"[^a-z0-9]", "", name.lower()) if name else None  # CIFAR-10 = cifar10


def same_data(runs_a, runs_b):
    """True when every run of both groups was evaluated on the same data: one dataset name
    (where known; "CIFAR-10" and "cifar10" are one) and one test-set size. Statistics that
    compare two groups (differences, intervals, paired tests) need it."""
    found = [data_of(r) for r in list(runs_a) + list(runs_b)]
    names = {_name_key(name) for name, _ in found} - {None}
    return len(names) <= 1 and len({n for _, n in found}) == 1


def data_label(runs):
    """E.g. 'digits, n=360' or 'CIFAR-10, n=64': the data a group of runs was evaluated on."""
    seen = []
    for name, n in map(data_of, runs):
        label = f"{name or 'data not recorded'}, n={n if n is not None else '?'}"
        if label not in seen:
            seen.append(label)
    return " / ".join(seen)


def group(results):
    """{name: [results]} in first-seen order."""
    out = {}
    for r in results:
        out.setdefault(r["name"], []).append(r)
    return out


def write(result, path):
    """The results JSON in `path`, atomically (`tlres.run.writes.atomic`: a link there is replaced,
    never written through)."""
    writes.atomic_text(path, json.dumps(check(dict(result), path), indent=1) + "\n")


def from_csv(history, predictions, framework, device=None, dataset=None, class_names=None,
             name=None):
    """A result from another framework's CSV history and predictions file.

    history: a CSV with at least an `epoch` column (tlres' other columns are read
    when present). predictions: index,label,prediction per test example. Final
    metrics are computed from the predictions by `tlres.run.evaluate`; the loss is the
    last history row's val_loss when the history has one.
    """
    for path in (history, predictions):
        if not os.path.isfile(path):
            raise TlresError(f"{path}: no such file")
    header = _read_csv(history)[0]
    if "epoch" not in header:
        raise TlresError(f"{history}: a history needs an epoch column; it has "
                         f"{quote(', '.join(header), 200) if header else 'none'}")
    hist = read_history(history)
    for row, line in zip(hist, _read_csv(history)[2]):
        if not _is_number(row["epoch"]):
            raise TlresError(f"{history}: line {line}: epoch must be a number")
    if hist and hist[-1].get("val_loss") is not None and not _is_number(hist[-1]["val_loss"], 0):
        raise TlresError(f"{history}: the last val_loss is {hist[-1]['val_loss']}; expected a finite number >= 0")
    preds = read_predictions(predictions)
    if not preds["index"]:
        raise TlresError(f"{predictions}: holds no predictions")
    if len(set(preds["index"])) != len(preds["index"]):
        raise TlresError(f"{predictions}: repeats a test-set index")
    top = max(max(preds["label"]), max(preds["prediction"]))
    if min(min(preds["label"]), min(preds["prediction"])) < 0:
        raise TlresError(f"{predictions}: labels and predictions must be class numbers >= 0")
    num_classes = len(class_names) if class_names else top + 1
    if num_classes > MAX_CLASSES:
        raise TlresError(f"{predictions}: class {top} would make {num_classes} classes; at most {MAX_CLASSES}")
    if top >= num_classes:
        raise TlresError(f"{predictions}: class {top} is beyond the {num_classes} --class-names")
    m = evaluate.prediction_metrics(preds["label"], preds["prediction"], num_classes)
    if hist and hist[-1].get("val_loss") is not None:
        m["loss"] = hist[-1]["val_loss"]
    if hist:
        m["epochs"] = hist[-1]["epoch"]
    if class_names:
        m["class_names"] = list(class_names)
    return check({
        "schema": SCHEMA,
        "name": name or framework,
        "source": os.path.abspath(history),
        "framework": {"name": framework, "versions": {}},
        "device": device,
        "config": {},
        "dataset": {"name": dataset, "num_test": len(preds["index"]), "num_classes": num_classes,
                    "class_names": list(class_names) if class_names else None},
        "history": hist,
        "metrics": m,
        "predictions": preds,
    }, history)

