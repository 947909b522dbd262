"""Ablation grid cells: each cell is baseline/improved with exactly one switch flipped."""

import dataclasses

import pytest

from tlres.analysis import ablation
from tlres.run import rundir
from tlres.commands import ablation as ablation_cmd
from tlres.core.config import BASELINE, EXECUTION_FIELDS, IMPROVED, QUICK


def _diff(a, b):
    return {f.name for f in dataclasses.fields(a)
            if f.name != "preset" and getattr(a, f.name) != getattr(b, f.name)}


def test_grid_has_ten_cells_each_one_switch_from_its_parent():
    c = ablation.cells()
    assert len(c) == 10
    assert _diff(c["baseline"], BASELINE) == set() and _diff(c["improved"], IMPROVED) == set()
    assert _diff(c["baseline+augment"], BASELINE) == {"augment"} and c["baseline+augment"].augment
    assert _diff(c["improved-cosine"], IMPROVED) == {"schedule"}
    assert c["improved-cosine"].schedule == "constant"
    assert _diff(c["baseline+transfer"], BASELINE) == {"weights"}


def test_weights_none_override_collapses_transfer_cells():
    c = ablation.cells(weights="none", epochs=1)
    assert "baseline+transfer" not in c and "improved-transfer" not in c
    assert len(c) == 8 and all(cfg.epochs == 1 and cfg.weights == "none" for cfg in c.values())


@pytest.mark.slow  # 4 tiny-arch runs on digits + report: a few minutes on a shared 2-core machine
def test_grid_command_runs_reuses_finished_cells_and_reports(tmp_path, capsys):
    """`tlres ablation` on digits, 1 epoch, 2 seeds: end to end, reuse, report."""
    import csv
    import json

    out = tmp_path / "grid"
    argv = ["--out", str(out), "--seeds", "2", "--cells", "baseline,improved", "--data", "digits",
            "--arch", "tiny", "--weights", "none", "--epochs", "1"]
    assert ablation_cmd.main(argv) == 0
    for cell in ("baseline", "improved"):
        for k in (0, 1):
            run = out / cell / f"seed{k}"
            assert json.loads((run / "status.json").read_text())["state"] == "finished"
            cfg = json.loads((run / "config.json").read_text())["config"]
            assert cfg["seed"] == k and cfg["epochs"] == 1 and cfg["arch"] == "tiny"
            # only the given flags override: the cells keep their own switches
            assert cfg["augment"] == (cell == "improved") and cfg["label_smoothing"] == (
                0.1 if cell == "improved" else 0.0)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/metrics.json")}
    # a failed run is cleared and rerun; finished ones are reused, not retrained
    (out / "improved" / "seed1" / "status.json").write_text('{"state": "failed"}')
    capsys.readouterr()
    assert ablation_cmd.main(argv) == 0
    assert "trained 1 run, reused 3" in capsys.readouterr().out
    for p, t in stamps.items():
        assert (p.stat().st_mtime_ns == t) == ("improved/seed1" not in str(p))
    # ...and the grid feeds the report: two groups of two runs, means of the runs' own metrics
    rows = {r["group"]: r for r in csv.DictReader(open(out / "report" / "summary.csv"))}
    accs = [json.loads((out / "improved" / f"seed{k}" / "metrics.json").read_text())["accuracy"]
            for k in (0, 1)]
    assert int(rows["improved"]["runs"]) == 2
    assert float(rows["improved"]["accuracy_mean"]) == pytest.approx(sum(accs) / 2)  # float64: ulps
    assert (out / "report" / "fig2_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_grid_command_errors_are_one_line(tmp_path, capsys, monkeypatch):
    """Offline without the ImageNet file, whatever this machine has: an empty Keras cache and an
    unreachable download host (online, or with the weights cached, the grid would start training)."""
    from keras.src.backend import config

    from tlres.data import online

    monkeypatch.setattr(config, "keras_home", lambda: str(tmp_path / "keras"))
    monkeypatch.setattr(online, "reachable", lambda *a, **k: False)
    assert ablation_cmd.main(["--out", str(tmp_path / "g"), "--epochs", "1", "--data", "digits"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "need them" in err[0] and "--weights none" in err[0]
    assert not (tmp_path / "g").exists()  # nothing trained, nothing written
    with pytest.raises(SystemExit) as e:
        ablation_cmd.main(["--out", str(tmp_path / "g"), "--cells", "nope"])
    assert e.value.code == 2 and "unknown nope" in capsys.readouterr().err


def test_only_given_flags_override_the_cells():
    out, seeds, names, overrides, _, _ = ablation_cmd.parse(
        ["--out", "g", "--seeds", "3", "--epochs", "2", "--augment", "--cells", "baseline"])
    assert (out, seeds, names) == ("g", 3, ["baseline"])
    assert overrides == {"epochs": 2, "augment": True}
    assert ablation.cells(**overrides)["baseline"].augment  # given explicitly: applies to baseline too


def test_reuse_ignores_how_a_run_executed_but_not_what_it_computed(tmp_path):
    import json

    cfg = ablation.cells(weights="none", epochs=1)["improved"].replace(out=str(tmp_path / "old"))
    saved = dataclasses.asdict(cfg.replace(out="/elsewhere", compile_cache=False))
    del saved["conv"]  # a run from before --conv existed
    (tmp_path / "status.json").write_text('{"state": "finished"}')
    (tmp_path / "config.json").write_text(json.dumps({"config": saved}))
    assert rundir.finished_with(str(tmp_path), cfg)
    assert rundir.finished_with(str(tmp_path), cfg.replace(conv="xla"))
    assert not rundir.finished_with(str(tmp_path), cfg.replace(epochs=2))
    assert not rundir.finished_with(str(tmp_path), cfg.replace(precision="mixed_bfloat16"))
    for name in ("pipeline", "data_parallel"):  # not shown to change rounding only: what it computes
        assert name not in EXECUTION_FIELDS
    (tmp_path / "config.json").write_text(json.dumps({"config": saved, "framework": "pytorch"}))
    assert not rundir.finished_with(str(tmp_path), cfg)  # the PyTorch reference's run is not a Keras one


def test_config_json_records_both_halves_and_they_make_the_whole():
    from tlres.core.config import COMPUTES, EXECUTION, halves

    h = halves(QUICK.replace(out="r"))
    assert set(h) == {COMPUTES, EXECUTION} and not set(h[COMPUTES]) & set(h[EXECUTION])
    assert {**h[COMPUTES], **h[EXECUTION]} == dataclasses.asdict(QUICK.replace(out="r"))
    assert set(h[EXECUTION]) == set(EXECUTION_FIELDS) >= {"out", "conv", "compile_cache", "checkpoint_every"}
    assert {"seed", "precision", "weights", "lr", "data"} <= set(h[COMPUTES])


def test_transfer_from_keeps_ten_cells_with_the_source_where_imagenet_stood():
    c = ablation.cells(transfer_from="runs/pretrain", epochs=2)
    assert len(c) == 10
    on = {n for n, cfg in c.items() if cfg.weights == "runs/pretrain"}
    assert on == {"improved", "baseline+transfer", "improved-augment", "improved-smoothing",
                  "improved-cosine"}
    assert all(cfg.weights == "none" for n, cfg in c.items() if n not in on)
    assert _diff(c["baseline+transfer"], c["baseline"]) == {"weights"}


def test_transfer_from_with_weights_or_a_missing_source_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # a flag conflict: argparse's one line
        ablation_cmd.main(["--out", str(tmp_path / "g"), "--transfer-from", "x", "--weights", "none"])
    code = e.value.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "drop --weights" in err
    code = ablation_cmd.main(["--out", str(tmp_path / "g"), "--transfer-from", str(tmp_path / "absent"),
                              "--data", "digits", "--arch", "tiny"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "baseline+transfer" in err and "no such file" in err
    assert not (tmp_path / "g").exists()


def test_a_setting_added_since_a_run_counts_as_its_default(tmp_path):
    """Recorded runs predate later Config fields (e.g. test_split): they had those fields' defaults,
    so a grid must reuse them, not retrain them, and must not reuse them under another value."""
    import json

    from tlres.core.config import QUICK

    run = tmp_path / "r"
    run.mkdir()
    saved = dataclasses.asdict(QUICK)
    del saved["test_split"], saved["skip_bad_images"]
    (run / "config.json").write_text(json.dumps({"config": saved}))
    (run / "status.json").write_text(json.dumps({"state": "finished"}))
    assert rundir.finished_with(str(run), QUICK)
    assert not rundir.finished_with(str(run), QUICK.replace(test_split=0.3))


def test_an_old_run_directory_reads_the_same_everywhere(tmp_path):
    """rundir.recorded (reuse, compare) and a resume fill a field added since the same way:
    its default, but conv "xla" (runs before --conv used XLA's kernel)."""
    import json

    from tlres.core.config import QUICK
    from tlres.run.rundir import recorded

    saved = dataclasses.asdict(QUICK.replace(epochs=3))
    del saved["conv"], saved["test_split"]
    got = recorded(saved)
    assert got == {**saved, "conv": "xla", "test_split": 0.2} and list(got)[:len(saved)] == list(saved)
    (tmp_path / "config.json").write_text(json.dumps({"config": saved, "dataset": {
        "num_train": 1, "num_test": 1, "num_classes": 10}}))
    (tmp_path / "status.json").write_text('{"state": "failed"}')
    resumed = dataclasses.asdict(rundir.resumed_config(str(tmp_path)))
    assert {k: v for k, v in resumed.items() if k != "out"} == {k: v for k, v in got.items() if k != "out"}


def test_options_add_one_cell_each_the_improved_preset_with_that_option_only(capsys):
    """--option NAME[=VALUE]: improved+NAME differs from improved in that field alone, at the
    value given or the option's default; a bad name or value is one line, as its flag's."""
    c = ablation.cells(options={"ema": 0.999, "randaugment": "2,9", "freeze": 1})
    assert len(c) == 13 and _diff(c["improved+ema"], c["improved"]) == {"ema"}
    assert c["improved+ema"].ema == 0.999 and c["improved+randaugment"].randaugment == "2,9"
    assert _diff(c["improved+freeze"], c["improved"]) == {"freeze_backbone_epochs"}
    *_, overrides, _, _ = ablation_cmd.parse(["--out", "g", "--option", "mixup", "--option", "warmup=2"])
    assert overrides["options"] == {"mixup": 0.2, "warmup": 2}
    for bad, said in ((["--option", "ema=1"], "--option ema=1: must be >= 0 and < 1"),
                      (["--option", "dropout"], "unknown option 'dropout'")):
        with pytest.raises(SystemExit) as e:
            ablation_cmd.parse(["--out", "g"] + bad)
        err = capsys.readouterr().err
        assert e.value.code == 2 and said in err and err.count("\n") == 1
