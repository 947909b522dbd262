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
    with open(path, "w") as f:
        json.dump(check(dict(result), path), f, indent=1)
        f.write("\n")


def from_csv(history, predictions, framework, device=None, dataset=None, class_names=None,
             name=None):
    """A result from another framework's CSV history and predictions file.

    history: a CSV with at least an `epoch` column (tlres' other columns are read
    when present). predictions: index,label,prediction per test example. Final
    metrics are computed from the predictions by `tlres.evaluate`; the loss is the
    last history row's val_loss when the history has one.
    """
    from tlres import evaluate

    for path in (history, predictions):
        if not os.path.isfile(path):
            raise TlresError(f"{path}: no such file")
    try:
        hist = read_history(history)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TlresError(f"{history}: cannot read it as CSV ({e})") from None
    with open(history, newline="") as f:
        header = next(csv.reader(f), [])
    if "epoch" not in header:
        raise TlresError(f"{history}: a history needs an epoch column; it has {', '.join(header) or 'none'}")
    try:
        preds = read_predictions(predictions)
    except ValueError as e:
        raise TlresError(f"{predictions}: index, label and prediction must be integers ({e})") from None
    if not preds["index"]:
        raise TlresError(f"{predictions}: holds no predictions")
    if len(set(preds["index"])) != len(preds["index"]):
        raise TlresError(f"{predictions}: repeats a test-set index")
    top = max(max(preds["label"]), max(preds["prediction"]))
    if min(min(preds["label"]), min(preds["prediction"])) < 0:
        raise TlresError(f"{predictions}: labels and predictions must be class numbers >= 0")
    num_classes = len(class_names) if class_names else top + 1
    if top >= num_classes:
        raise TlresError(f"{predictions}: class {top} is beyond the {num_classes} --class-names")
    m = evaluate.prediction_metrics(preds["label"], preds["prediction"], num_classes)
    if hist and hist[-1].get("val_loss") is not None:
        m["loss"] = hist[-1]["val_loss"]
    if hist:
        m["epochs"] = hist[-1]["epoch"]
    if class_names:
        m["class_names"] = list(class_names)
    return {
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
    }


def main(argv=None, prog="python -m tlres.results"):
    """`export RUN_DIR --out FILE` and `convert --history H --predictions P --framework NAME --out FILE`."""
    import sys

    from tlres import cli

    p = cli._Parser(prog=prog, description=f"Write results files (schema {SCHEMA}).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=cli._Parser)
    e = sub.add_parser("export", help="a tlres (or tlres.reference.torch) run directory -> results JSON")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--out", required=True, help="results JSON to write")
    c = sub.add_parser("convert", help="another framework's CSV history and predictions -> results JSON")
    c.add_argument("--history", required=True, help="CSV with at least an epoch column")
    c.add_argument("--predictions", required=True, help="CSV with index,label,prediction")
    c.add_argument("--framework", required=True, help="e.g. pytorch, tensorflow, jax-flax")
    c.add_argument("--device", help="free-form device description")
    c.add_argument("--dataset", help="dataset name, e.g. digits, cifar10")
    c.add_argument("--class-names", help="comma-separated class names, in label order")
    c.add_argument("--name", help="label of this result (default: the framework)")
    c.add_argument("--out", required=True, help="results JSON to write")
    for q in (e, c):
        q.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    return cli.guarded(prog, args.debug, lambda: _main(args))


def _main(args):
    if args.command == "export":
        result = from_run_dir(args.run_dir)
    else:
        names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
        result = from_csv(args.history, args.predictions, args.framework, args.device,
                          args.dataset, names, args.name)
    try:
        write(result, args.out)
    except OSError as err:
        raise TlresError(f"--out {args.out}: cannot write it ({err.strerror})") from None
    m = result["metrics"]
    print(f"{args.out}: {result['name']} ({result['framework']['name']}), accuracy "
          f"{m['accuracy']:.4f} on {m['num_test']} test examples")


if __name__ == "__main__":
    import sys

    sys.exit(main())
