"""Names from a user's data folder in the files tlres writes: formulas a spreadsheet would run are
escaped (OWASP: a leading ' for =, +, -, @, tab, CR), names that are not UTF-8 and symbolic links
leading out of the data folder are refused in one line before any run directory exists."""

import csv
import os

import pytest
from conftest import write_image_folder

from tlres import __main__ as tlres_main
from tlres.data import imagefolder
from tlres.run import rundir, writes

FORMULAS = ['=HYPERLINK("x","y")', "+cmd|'-C calc'!A0", "@SUM(1)", "-2+3"]
TINY = ["--preset", "quick", "--arch", "tiny", "--epochs", "1", "--batch-size", "4", "--image-size", "8"]
STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP's list, written out here


def run(capsys, *argv):
    try:
        code = tlres_main.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return code, err


def cells(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_text_cells_are_escaped_and_read_back():
    for text in FORMULAS + ["\tx", "\rx", "'=already", "'quoted"]:
        assert writes.csv_text(text) == "'" + text
        assert writes.csv_text_read(writes.csv_text(text)) == text
    for text in ("cat", "a-b", "train/=x/1.png", "", "0.5"):
        assert writes.csv_text(text) == text == writes.csv_text_read(text)


def test_split_csv_escapes_class_folders_named_as_formulas(tmp_path):
    root = tmp_path / "data"
    write_image_folder(str(root), classes=FORMULAS, per_class=2)
    ds = imagefolder.load(str(root), image_size=8)
    path = tmp_path / "split.csv"
    rundir.write_split(str(path), ds.files)
    rows = cells(path)[1:]
    assert len(rows) == 8
    for split, index, name, rel in rows:
        assert not name.startswith(STARTS) and not rel.startswith(STARTS)
        assert writes.csv_text_read(name) in FORMULAS and name == "'" + writes.csv_text_read(name)
        assert (root / writes.csv_text_read(rel)).is_file()  # the path as read, once unescaped
        assert writes.csv_text_read(rel).startswith(writes.csv_text_read(name) + "/")


@pytest.mark.slow
def test_a_run_and_predict_write_no_formula(tmp_path, capsys):
    """Through the commands: split.csv and predict's CSV hold no cell a spreadsheet runs, numbers
    (index, confidence) stay numbers."""
    root, out = tmp_path / "data", tmp_path / "run"
    write_image_folder(str(root), classes=FORMULAS, per_class=4)
    assert run(capsys, "train", *TINY, "--data", root, "--out", out)[0] == 0
    pred = tmp_path / "pred.csv"
    assert run(capsys, "predict", out / "model.keras", root, "--out", pred, "--top-k", "2")[0] == 0
    for name in ("split.csv", "predictions.csv"):
        for row in cells(out / name)[1:]:
            assert not any(c.startswith(STARTS) for c in row), row
    rows = cells(pred)[1:]
    assert len(rows) == 16
    for row in rows:
        assert not any(c.startswith(STARTS) for c in row), row
        assert writes.csv_text_read(row[1]) in FORMULAS and 0 <= float(row[2]) <= 1
        assert os.path.isfile(writes.csv_text_read(row[0]))


def test_a_name_that_is_not_utf8_is_one_line_and_no_run(tmp_path, capsys):
    root = tmp_path / "data"
    write_image_folder(str(root), classes=("cat", "dog"), per_class=3, split="train")
    write_image_folder(str(root), classes=("cat", "dog"), per_class=2, split="test")
    bad = os.path.join(os.fsencode(root / "train"), b"caf\xff")
    os.rename(os.fsencode(root / "train" / "dog"), bad)
    os.rename(os.fsencode(root / "test" / "dog"), os.path.join(os.fsencode(root / "test"), b"caf\xff"))
    out = tmp_path / "run"
    code, err = run(capsys, "train", *TINY, "--data", root, "--out", out)
    assert code == 2 and len(err) == 1, err
    assert err[0].endswith(f"--data {root}: the name b'train/caf\\xff' is not UTF-8; rename it "
                           "(class and file names go into split.csv and config.json)")
    assert not out.exists()


def test_an_image_file_name_that_is_not_utf8_is_refused(tmp_path):
    root = tmp_path / "data"
    write_image_folder(str(root), classes=("cat", "dog"), per_class=3)
    os.rename(os.fsencode(root / "cat" / "img00.png"), os.fsencode(root / "cat") + b"/\xfe.png")
    with pytest.raises(imagefolder.TlresError, match=r"the name b'cat/\\xfe.png' is not UTF-8"):
        imagefolder.plan(str(root))


def _outside(tmp_path):
    """A folder of images beside the data folder, not inside it."""
    elsewhere = tmp_path / "elsewhere"
    write_image_folder(str(elsewhere), classes=("secret",), per_class=3, seed=5)
    return elsewhere / "secret"


def test_a_class_folder_linked_outside_is_refused(tmp_path, capsys):
    root = tmp_path / "data"
    write_image_folder(str(root), classes=("cat", "dog"), per_class=3)
    (root / "owl").symlink_to(_outside(tmp_path), target_is_directory=True)
    out = tmp_path / "run"
    code, err = run(capsys, "train", *TINY, "--data", root, "--out", out)
    assert code == 2 and len(err) == 1, err
    assert err[0].endswith(f"--data {root}: owl is a symbolic link to {tmp_path}/elsewhere/secret, outside "
                           "the data folder; copy what it points at into the folder, or remove the link")
    assert not out.exists()


def test_a_file_linked_outside_is_refused(tmp_path):
    root = tmp_path / "data"
    write_image_folder(str(root), classes=("cat", "dog"), per_class=3)
    (root / "cat" / "extra.png").symlink_to(_outside(tmp_path) / "img00.png")
    with pytest.raises(imagefolder.TlresError, match="cat/extra.png is a symbolic link to .*outside"):
        imagefolder.plan(str(root))


def test_links_inside_the_folder_are_followed_and_shown_as_read(tmp_path):
    """A class folder and a file linked to places inside the data folder are read, and split.csv
    names them by the path as read (the link's name)."""
    root = tmp_path / "data"
    write_image_folder(str(root), classes=("cat", "dog"), per_class=3)
    (root / "pets").symlink_to(root / "cat", target_is_directory=True)
    (root / "dog" / "alias.png").symlink_to(root / "cat" / "img00.png")
    ds = imagefolder.load(str(root), image_size=8)
    paths = sorted(f[3] for f in ds.files)
    assert ds.class_names == ("cat", "dog", "pets")
    assert "dog/alias.png" in paths and sum(p.startswith("pets/") for p in paths) == 3
