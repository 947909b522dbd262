"""tlres deletes and overwrites only what it wrote: real folders and files in tmp_path.

A run directory's marker (.tlres-run.json) names the files tlres wrote there; `--overwrite` and
the ablation grid remove only those, and refuse, in one line naming it, a directory holding
anything else or no marker. The output commands refuse an existing file without --overwrite,
and a symbolic link always (their writes replace a link, never write through it).
"""

import json
import os

import numpy as np
import pytest

from tlres.run import rundir, writes
from tlres import __main__ as tlres_main
from tlres.core.errors import TlresError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "experiments", "results", "digits", "runs", "improved", "seed0")  # recorded
T = ["--preset", "quick", "--arch", "tiny", "--epochs", "1", "--batch-size", "8", "--image-size", "8"]


def tlres(capsys, *argv):
    """`tlres ARGV...` in this process: (exit code, non-empty stderr lines)."""
    try:
        code = tlres_main.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def tree(folder):
    """{relative path: bytes, or None for a folder} of everything under `folder`, links unfollowed."""
    out = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(base, name)
            out[os.path.relpath(p, folder)] = None if os.path.isdir(p) and not os.path.islink(p) else (
                os.readlink(p) if os.path.islink(p) else open(p, "rb").read())
    return out


def users_folder(path):
    """The issue's folder: a user's notes, a subfolder, and a file that happens to be called config.json."""
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("p\n")
    (path / "sub" / "draft.txt").write_text("d\n")
    (path / "config.json").write_text("{}\n")
    return tree(path)


def npz(path, n=16):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), y_train=np.arange(n) % 2,
             x_test=rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8), y_test=np.arange(8) % 2)
    return path


def test_overwrite_leaves_a_users_folder_that_holds_a_config_json(tmp_path, capsys):
    home = tmp_path / "home"
    before = users_folder(home)
    code, err = tlres(capsys, "train", *T, "--data", npz(tmp_path / "d.npz"), "--out", home, "--overwrite")
    assert code == 2 and len(err) == 1, err
    assert f"--out {home}: holds config.json and no .tlres-run.json" in err[0]
    assert tree(home) == before


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real finished run (tiny net, 8x8 images, one epoch), its checkpoint kept."""
    base = tmp_path_factory.mktemp("own")
    out = base / "run"
    assert tlres_main.main(["train", *T, "--data", str(npz(base / "d.npz")), "--out", str(out),
                            "--keep-checkpoint"]) == 0
    return out


def test_a_run_marks_every_file_it_writes(run_dir):
    owned = writes.read_marker(run_dir)
    present = {p for p, v in tree(run_dir).items() if v is not None} - {writes.MARKER}
    # the run directory's documented layout (README "The run directory"), for an array dataset
    assert present == {"config.json", "status.json", "history.csv", "ckpt/checkpoint.npz", "model.keras",
                       "metrics.json", "predictions.csv", "accuracy.png", "loss.png", "confusion.png"}
    assert present <= owned and rundir.stranger(run_dir) is None


def test_overwrite_refuses_a_run_holding_a_strangers_file_then_replaces_only_its_own(run_dir, tmp_path,
                                                                                     capsys):
    data = npz(tmp_path / "d.npz")
    (run_dir / "ckpt" / "notes.txt").write_text("mine\n")
    before = tree(run_dir)
    code, err = tlres(capsys, "train", *T, "--data", data, "--out", run_dir, "--overwrite")
    assert code == 2 and len(err) == 1, err
    assert err[0].endswith(f"--out {run_dir}: ckpt/notes.txt is not a file tlres wrote, so --overwrite "
                           "will not delete anything there; move it out or choose another path")
    assert tree(run_dir) == before
    (run_dir / "ckpt" / "notes.txt").unlink()
    os.symlink(tmp_path / "d.npz", run_dir / "data.npz")  # a link is never tlres'
    code, err = tlres(capsys, "train", *T, "--data", data, "--out", run_dir, "--overwrite")
    assert code == 2 and "data.npz is not a file tlres wrote" in err[0], err
    (run_dir / "data.npz").unlink()
    assert tlres_main.main(["train", *T, "--data", str(data), "--out", str(run_dir), "--overwrite"]) == 0
    assert "ckpt" not in tree(run_dir)  # replaced: this run kept no checkpoint


def test_clear_removes_only_what_the_marker_names(tmp_path):
    d = tmp_path / "r"
    (d / "ckpt").mkdir(parents=True)
    writes.mark(d, ["status.json", "ckpt/checkpoint.npz", "files.tmp"])
    for rel in ("status.json", "status.json.tmp", "ckpt/checkpoint.npz", "ckpt/checkpoint.npz.tmp",
                "files.tmp/a.png", "ckpt/mine.txt", "mine.txt"):
        (d / rel).parent.mkdir(exist_ok=True)
        (d / rel).write_text(rel)
    rundir.clear(d)
    assert tree(d) == {"ckpt": None, "ckpt/mine.txt": b"ckpt/mine.txt", "mine.txt": b"mine.txt"}
    rundir.clear(tmp_path)  # no marker: nothing at all
    assert os.path.isdir(d)


def test_the_grid_keeps_a_file_placed_in_a_cell(tmp_path, capsys):
    cell = tmp_path / "grid" / "baseline" / "seed0"
    cell.mkdir(parents=True)
    (cell / "thesis.tex").write_text("x\n")
    argv = ["ablation", "--out", tmp_path / "grid", "--cells", "baseline", "--seeds", "1", "--arch", "tiny",
            "--data", "digits", "--epochs", "1", "--batch-size", "8", "--image-size", "8", "--no-report"]
    code, err = tlres(capsys, *argv)
    assert code == 2 and len(err) == 1 and "holds thesis.tex and no .tlres-run.json" in err[0], err
    writes.mark(cell, rundir.RUN_FILES)  # a cell tlres made, a failed run's status in it: still refused
    (cell / "status.json").write_text('{"state": "failed"}')
    code, err = tlres(capsys, *argv)
    assert code == 2 and len(err) == 1 and "thesis.tex is not a file tlres wrote" in err[0], err
    assert (cell / "thesis.tex").read_text() == "x\n" and (cell / "status.json").exists()


def check_output_command(capsys, tmp_path, argv, flag, target):
    """`argv` writes `target` (`flag` names it): refused when it exists, and when it is a link even with
    --overwrite (the link's target unchanged); a regular file is replaced with --overwrite."""
    target.write_text("keep me\n")
    code, err = tlres(capsys, *argv)
    assert code == 2 and len(err) == 1, err
    assert err[0].endswith(f"{flag} {target}: exists; choose another name or pass --overwrite to replace it")
    assert target.read_text() == "keep me\n"
    os.rename(target, tmp_path / "real")
    os.symlink(tmp_path / "real", target)
    code, err = tlres(capsys, *argv, "--overwrite")
    assert code == 2 and len(err) == 1, err
    assert err[0].endswith(f"{flag} {target}: is a symbolic link; tlres does not write through links, "
                           "give the real file's path or remove the link")
    assert (tmp_path / "real").read_text() == "keep me\n" and os.path.islink(target)
    os.remove(target)
    target.write_text("keep me\n")
    code, err = tlres(capsys, *argv, "--overwrite")
    assert code == 0, err
    assert target.read_text() != "keep me\n" and not [f for f in os.listdir(target.parent) if ".tmp" in f]


def test_results_export_refuses_an_existing_file_and_a_link(tmp_path, capsys):
    out = tmp_path / "r.json"
    check_output_command(capsys, tmp_path, ["results", "export", RUN, "--out", out], "--out", out)
    assert json.loads(out.read_text())["schema"] == "tlres.results/1"


def test_compare_markdown_refuses_an_existing_file_and_a_link(tmp_path, capsys):
    out = tmp_path / "c.md"
    check_output_command(capsys, tmp_path, ["compare", RUN, "--markdown", out], "--markdown", out)
    assert out.read_text().startswith("| metric |")


def test_report_refuses_an_existing_file_and_a_link(tmp_path, capsys):
    folder = tmp_path / "rep"
    folder.mkdir()
    check_output_command(capsys, tmp_path, ["report", RUN, "--out", folder], "--out", folder / "summary.md")
    assert (folder / "fig2_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_predict_refuses_an_existing_file_and_a_link(tmp_path, capsys):
    out = tmp_path / "p.csv"
    out.write_text("keep me\n")
    code, err = tlres(capsys, "predict", tmp_path / "no-model", RUN, "--out", out)
    assert code == 2 and err[0].endswith(f"--out {out}: exists; choose another name or pass --overwrite "
                                         "to replace it"), err
    os.rename(out, tmp_path / "real")
    os.symlink(tmp_path / "real", out)
    code, err = tlres(capsys, "predict", tmp_path / "no-model", RUN, "--out", out, "--overwrite")
    assert code == 2 and len(err) == 1 and "is a symbolic link" in err[0], err
    assert (tmp_path / "real").read_text() == "keep me\n"


def test_an_atomic_write_replaces_a_link_never_its_target(tmp_path):
    (tmp_path / "target").write_text("keep me\n")
    os.symlink(tmp_path / "target", tmp_path / "out.json")
    writes.atomic_text(str(tmp_path / "out.json"), "new\n")
    assert not os.path.islink(tmp_path / "out.json") and (tmp_path / "out.json").read_text() == "new\n"
    assert (tmp_path / "target").read_text() == "keep me\n"
    os.symlink(tmp_path / "target", tmp_path / "x.json.tmp")  # a link at the temporary name
    with pytest.raises(TlresError, match="x.json.tmp is in the way and tlres did not write it"):
        writes.atomic_text(str(tmp_path / "x.json"), "new\n")
    assert (tmp_path / "target").read_text() == "keep me\n" and os.path.islink(tmp_path / "x.json.tmp")
