"""Damaged results files, run directories and converter CSVs: one line, exit 2, never a traceback.

Each case is one that crashed `tlres compare` or `tlres results convert`
with a traceback before (found by tests/data/test_fuzz.py), or a bound that keeps a small file
from making a huge confusion matrix.
"""

import json
import os
import shutil

import pytest

from tlres.analysis import results
from tlres.commands import compare as compare_cmd, results as results_cmd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORDED_RUN = os.path.join(ROOT, "experiments", "results", "digits", "runs", "improved", "seed0")


def a_result():
    labels, preds = [0, 1, 2, 0, 1, 2], [0, 1, 1, 0, 2, 2]
    return {"schema": results.SCHEMA, "name": "r", "framework": {"name": "keras-jax", "versions": {}},
            "config": {"seed": 0}, "dataset": {"name": "t", "num_classes": 3},
            "history": [{"epoch": 1, "loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.6}],
            "metrics": {"accuracy": 4 / 6, "correct": 4, "num_test": 6, "loss": 0.4, "mean_class_accuracy": 4 / 6},
            "predictions": {"index": list(range(6)), "label": labels, "prediction": preds}}


def one_line_exit_2(capsys, main, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    return err


def edited(**changes):
    r = a_result()
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = r
        for p in parents:
            node = node[p]
        if value is DROP:
            del node[last]
        else:
            node[last] = value
    return r


DROP = object()

BAD_RESULTS = {
    "a number, not an object": (3, "a result must be a JSON object; found a number"),
    "a list of strings": (["x"], "a result must be a JSON object; found a string"),
    "no name": (edited(name=None), "name must be a non-empty string"),
    "unhashable seed": (edited(config__seed=[1]), "config.seed must be a number or a string"),
    "framework a string": (edited(framework="jax"), "framework must be an object"),
    "NaN accuracy": (edited(metrics__accuracy=float("nan")), "metrics.accuracy must be a number in [0, 1]"),
    "accuracy a string": (edited(metrics__accuracy="0.9"), "metrics.accuracy must be a number in [0, 1]"),
    "num_test 0": (edited(metrics__num_test=0), "metrics.num_test must be a positive integer"),
    "num_test beyond floats": (edited(metrics__num_test=10 ** 400), "metrics.num_test must be a positive integer"),
    "more correct than tested": (edited(metrics__correct=7), "metrics.correct must be an integer in [0, num_test]"),
    "loss infinite": (edited(metrics__loss=float("inf")), "metrics.loss must be a finite number >= 0"),
    "history of strings": (edited(history=["x"]), "history must be a list of objects of numbers"),
    "epoch NaN": (edited(history=[{"epoch": float("nan")}]), "history must be a list of objects of numbers"),
    "label beyond num_classes": (edited(predictions__label=[0, 1, 2, 0, 1, 3]), "labels and predictions in 0..2"),
    "num_classes 10^9": (edited(dataset__num_classes=10 ** 9), "dataset.num_classes must be an integer from 1 to 1000"),
    "ragged predictions": (edited(predictions__index=[0, 1]), "index, label and prediction lists of one non-zero length"),
    "schema with a newline": (edited(schema="tlres.results/\n2"), "schema 'tlres.results/\\n2' is not supported"),
}


@pytest.mark.parametrize("case", list(BAD_RESULTS))
def test_damaged_results_file(tmp_path, capsys, case):
    obj, needle = BAD_RESULTS[case]
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(a_result()))
    bad.write_text(json.dumps(obj))
    one_line_exit_2(capsys, compare_cmd.main, [str(good), str(bad)], needle)


def test_json_nested_too_deeply(tmp_path, capsys):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    one_line_exit_2(capsys, compare_cmd.main, [str(tmp_path / "deep.json")], "JSON nested too deeply")


def test_predictions_of_more_classes_than_the_first_side_declares(tmp_path, capsys):
    """Two valid sides on the same test set, one declaring 3 classes, the other predicting
    class 4 of 5: the confusion matrices need 5 classes (this crashed in reshape)."""
    a, b = a_result(), a_result()
    b["dataset"]["num_classes"] = 5
    b["predictions"]["prediction"] = [0, 1, 4, 0, 1, 2]
    b["metrics"].update(accuracy=4 / 6, correct=4)
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert compare_cmd.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert "McNemar exact p" in capsys.readouterr().out


@pytest.mark.parametrize("name,text,needle", [
    ("metrics.json", "[1, 2]", "expected a JSON object; found a list"),
    ("metrics.json", '{"accuracy": 0.9}', "metrics need at least accuracy and num_test"),
    ("config.json", '{"config": [1]}', "config must be an object, its preset a string"),
    ("config.json", "[]", "expected a JSON object; found a list"),
    ("predictions.csv", "index,label,prediction\n0,1,\n", "line 2: prediction must be an integer; found ''"),
    ("predictions.csv", "index,label,prediction\n0,1\n", "line 2: prediction must be an integer"),
    ("predictions.csv", "index,label,prediction\n0,1,1,7\n", "line 2 has 4 cells; the header has 3"),
    ("history.csv", "epoch,loss\n1,\xff\n", "cannot read it as CSV (UnicodeDecodeError"),
])
def test_damaged_run_directory(tmp_path, capsys, name, text, needle):
    run = tmp_path / "run"
    shutil.copytree(RECORDED_RUN, run)
    (run / name).write_bytes(text.encode("latin-1"))
    one_line_exit_2(capsys, compare_cmd.main, [str(run)], needle)


@pytest.mark.parametrize("history,predictions,needle", [
    ('"3\n4",loss\n1,0.5\n', "index,label,prediction\n0,1,1\n", "a history needs an epoch column; it has '3\\n4, loss'"),
    ("epoch,loss\nx,0.5\n", "index,label,prediction\n0,1,1\n", "line 2: epoch must be a number"),
    ("epoch,val_loss\n1,nan\n", "index,label,prediction\n0,1,1\n", "the last val_loss is nan"),
    ("epoch\n1\n", "index,label,prediction\n0,1,\n", "line 2: prediction must be an integer"),
    ("epoch\n1\n", "index,label,prediction\n0,1,99999\n", "class 99999 would make 100000 classes; at most 1000"),
])
def test_damaged_converter_csv(tmp_path, capsys, history, predictions, needle):
    (tmp_path / "h.csv").write_text(history)
    (tmp_path / "p.csv").write_text(predictions)
    out = tmp_path / "r.json"
    one_line_exit_2(capsys, results_cmd.main, ["convert", "--history", str(tmp_path / "h.csv"), "--predictions",
                                           str(tmp_path / "p.csv"), "--framework", "x", "--out", str(out)], needle)
    assert not out.exists()
