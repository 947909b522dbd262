"""Train on folders of images (both layouts) with `tlres train`, then `tlres predict` the test images.

The tiny net, one epoch (seconds): what is tested is the plumbing from files to labels. Predict
loads the run's model.keras and evaluates it as the run did (same decoding, normalization, batch
size and convolution kernel), so on the machine that trained it, it must give predictions.csv's
labels exactly.
"""

import csv
import os
import shutil
import zipfile

import numpy as np
import pytest
from conftest import write_image_folder

from tlres import __main__ as tlres_main

TINY = ["--preset", "quick", "--arch", "tiny", "--epochs", "1", "--batch-size", "4"]


def tlres(capsys, *argv):
    """`tlres ARGV...` in this process: (exit code, stderr lines)."""
    try:
        code = tlres_main.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    return code, [l for l in err.splitlines() if l.strip()]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def recorded(run):
    """{test image path (relative to the data folder): (class name, confidence)} from the run's files."""
    split = [r for r in read_csv(os.path.join(run, "split.csv")) if r["split"] == "test"]
    preds = read_csv(os.path.join(run, "predictions.csv"))
    import json

    with open(os.path.join(run, "config.json")) as f:
        names = json.load(f)["dataset"]["class_names"]
    assert [int(r["index"]) for r in split] == [int(p["index"]) for p in preds]
    return {s["path"]: (names[int(p["prediction"])], float(p["confidence"])) for s, p in zip(split, preds)}


def same_predictions(csv_path, root, run):
    want = recorded(run)
    got = {os.path.relpath(r["path"], root).replace(os.sep, "/"): (r["class"], float(r["confidence"]))
           for r in read_csv(csv_path)}
    assert got.keys() == want.keys()
    for path, (cls, conf) in want.items():
        assert got[path][0] == cls, path  # the same labels, exactly
        assert abs(got[path][1] - conf) <= 1e-6, path  # both printed to 6 decimals from the same logits


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both layouts trained end to end through `tlres train`: {layout: (data folder, run directory)}."""
    base = tmp_path_factory.mktemp("predict")
    split_root, flat_root = str(base / "split"), str(base / "flat")
    write_image_folder(split_root, per_class=6, split="train")
    write_image_folder(split_root, per_class=3, split="test", seed=1)
    write_image_folder(flat_root, per_class=8, seed=2)
    runs = {}
    for name, root in (("split", split_root), ("flat", flat_root)):
        out = str(base / f"run-{name}")
        assert tlres_main.main(["train", *TINY, "--data", root, "--out", out]) == 0
        runs[name] = (root, out)
    return runs


def test_train_test_layout_run_files(trained):
    root, run = trained["split"]
    rows = read_csv(os.path.join(run, "split.csv"))
    assert sum(r["split"] == "train" for r in rows) == 18 and sum(r["split"] == "test" for r in rows) == 9
    assert "model.keras" in os.listdir(run) and "ckpt" not in os.listdir(run)
    assert len(read_csv(os.path.join(run, "predictions.csv"))) == 9


def test_predict_a_folder_reproduces_the_run(trained, tmp_path, capsys):
    root, run = trained["split"]
    out = tmp_path / "p.csv"
    code, err = tlres(capsys, "predict", run, os.path.join(root, "test"), "--out", out)
    assert code == 0 and err == [f"tlres predict: 9 prediction(s) -> {out}"]
    same_predictions(out, root, run)


def test_predict_files_with_top_k_reproduces_the_run(trained, tmp_path, capsys):
    root, run = trained["flat"]
    tested = [r["path"] for r in read_csv(os.path.join(run, "split.csv")) if r["split"] == "test"]
    assert len(tested) == 6  # 8 per class, test_split 0.2: floor(1.6 + 0.5) = 2 each
    out = tmp_path / "p.csv"
    code, _ = tlres(capsys, "predict", run, *[os.path.join(root, p) for p in tested], "--out", out,
                    "--top-k", 3)
    assert code == 0
    same_predictions(out, root, run)
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "class", "confidence", "class_2", "confidence_2", "class_3",
                             "confidence_3"]
    for r in rows:
        assert {r["class"], r["class_2"], r["class_3"]} == {"cat", "dog", "eel"}
        p = [float(r[k]) for k in ("confidence", "confidence_2", "confidence_3")]
        assert p == sorted(p, reverse=True) and abs(sum(p) - 1) <= 3e-6  # 3 values rounded to 1e-6


def test_predict_an_npz_and_a_copied_model_file(trained, tmp_path, capsys):
    root, run = trained["split"]
    from tlres.data import loaders as data

    ds = data.load(root, image_size=32)
    np.savez(tmp_path / "test.npz", x_test=ds.x_test)
    shutil.copy(os.path.join(run, "model.keras"), tmp_path / "alone.keras")  # no config.json beside it
    out = tmp_path / "p.csv"
    code, _ = tlres(capsys, "predict", tmp_path / "alone.keras", tmp_path / "test.npz", "--out", out)
    assert code == 0
    rows = read_csv(out)
    want = list(recorded(run).values())
    assert [int(r["index"]) for r in rows] == list(range(9))
    assert [r["class"] for r in rows] == [c for c, _ in want]


def test_a_keras_file_without_tlres_record_needs_input_norm(trained, tmp_path, capsys):
    root, run = trained["split"]
    bare = tmp_path / "bare.keras"
    with zipfile.ZipFile(os.path.join(run, "model.keras")) as src, zipfile.ZipFile(bare, "w") as dst:
        for item in src.infolist():
            if item.filename != "tlres.json":
                dst.writestr(item, src.read(item))
    code, err = tlres(capsys, "predict", bare, os.path.join(root, "test"), "--out", tmp_path / "p.csv")
    assert code == 2 and len(err) == 1 and "give --input-norm" in err[0]
    code, _ = tlres(capsys, "predict", bare, os.path.join(root, "test"), "--out", tmp_path / "p.csv",
                    "--input-norm", "paper", "--batch-size", 4)
    assert code == 0
    rows = read_csv(tmp_path / "p.csv")
    assert {r["class"] for r in rows} <= {"0", "1", "2"}  # no class names in a bare file
    names = ["cat", "dog", "eel"]
    by_path = {os.path.relpath(r["path"], root).replace(os.sep, "/"): names[int(r["class"])] for r in rows}
    assert by_path == {p: c for p, (c, _) in recorded(run).items()}


def bad_predict_cases(root, run, tmp):
    bad_dir = tmp / "bad"
    shutil.copytree(os.path.join(root, "test"), bad_dir)
    (bad_dir / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff junk")
    (tmp / "empty").mkdir()
    np.savez(tmp / "y.npz", y=np.zeros(3))
    (tmp / "exists.csv").write_text("keep me")
    test = os.path.join(root, "test")
    return {
        "missing model": ([tmp / "nope", test], "no such run directory or .keras file"),
        "folder without model.keras": ([tmp / "empty", test], "no model.keras in that folder"),
        "missing input": ([run, tmp / "nothing.png"], "no such file or folder"),
        "folder without images": ([run, tmp / "empty"], "no images found"),
        "corrupt image": ([run, bad_dir], "broken.jpg: not a readable image"),
        "npz without x": ([run, tmp / "y.npz"], "no array x or x_test"),
        "top-k above the classes": ([run, test, "--top-k", 4], "the model has 3 classes"),
        "existing --out": ([run, test, "--out", tmp / "exists.csv"], "exists; choose another name"),
        "conflicting --input-norm": ([run, test, "--input-norm", "caffe"], "trained with 'paper'"),
        "npz and images": ([run, test, tmp / "y.npz"], "an .npz input goes alone"),
    }


@pytest.mark.parametrize("case", ["missing model", "folder without model.keras", "missing input",
                                  "folder without images", "corrupt image", "npz without x",
                                  "top-k above the classes", "existing --out", "conflicting --input-norm",
                                  "npz and images"])
def test_bad_predict_input_is_one_line(case, trained, tmp_path, capsys):
    root, run = trained["split"]
    argv, needle = bad_predict_cases(root, run, tmp_path)[case]
    if "--out" not in argv:
        argv = argv + ["--out", tmp_path / "p.csv"]
    code, err = tlres(capsys, "predict", *argv)
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert err[0].startswith("tlres predict: error: ")
    assert not (tmp_path / "p.csv").exists() and (tmp_path / "exists.csv").read_text() == "keep me"
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_skip_bad_images_in_predict(trained, tmp_path, capsys):
    root, run = trained["split"]
    bad_predict_cases(root, run, tmp_path)
    code, err = tlres(capsys, "predict", run, tmp_path / "bad", "--out", tmp_path / "p.csv",
                      "--skip-bad-images")
    assert code == 0
    assert any("skipped 1 unreadable image(s)" in l and "broken.jpg" in l for l in err)
    assert len(read_csv(tmp_path / "p.csv")) == 9
