"""--tensorboard: the curves a run writes while it trains (tlres.run.curves), read back by protobuf's own
parser with every checksum checked (tests/helpers.py), against history.csv; a resume after a crash
keeps each step once. The event format is checked against CRC-32C's catalogue value and TensorFlow's
own reader; the values against history.csv at float32 precision (the format's simple_value): the
event holds exactly float32(history value), so they are compared exactly after that rounding."""

import os

import numpy as np
import pytest

from helpers import crc32c_bitwise, event_files, events, history, in_process_main, scalars, write_npz
from tlres.core import config
from tlres.run import curves

EVERY = 2  # steps between step-level points; 10 steps an epoch below
FLAGS = ["--preset", "quick", "--arch", "tiny", "--image-size", "8", "--batch-size", "16", "--epochs", "3",
         "--pipeline", "jax", "--tensorboard", "--tensorboard-every", str(EVERY)]


def f32(x):
    return np.float32(float(x))


def test_crc32c_is_the_catalogue_check_value():
    """CRC-32C/ISCSI of "123456789" is 0xE3069283 (the CRC catalogue; RFC 3720's polynomial)."""
    assert curves.crc32c(b"123456789") == 0xE3069283 == crc32c_bitwise(b"123456789")
    blob = bytes(range(256)) * 3
    assert curves.crc32c(blob) == crc32c_bitwise(blob)


def test_an_event_reads_back_with_protobufs_own_parser(tmp_path):
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(b"".join(curves.record(e) for e in (
        curves.event(0, file_version="brain.Event:2", wall_time=1.5), curves.event(0, start=True),
        curves.event(7, [("epoch/loss", 0.1), ("epoch/lr", 1e-3)]), curves.event(2 ** 40, [("step/loss", -3.0)]))))
    e = events(str(path))
    assert e[0].file_version == "brain.Event:2" and e[0].wall_time == 1.5
    assert e[1].session_log.status == 1  # SessionLog.START
    assert e[2].step == 7 and [(v.tag, v.simple_value) for v in e[2].summary.value] == [
        ("epoch/loss", f32(0.1)), ("epoch/lr", f32(1e-3))]
    assert e[3].step == 2 ** 40 and e[3].summary.value[0].simple_value == -3.0


@pytest.mark.parametrize("torn", [False, True])
def test_a_resume_keeps_what_the_checkpoint_covers_once_and_drops_the_rest(tmp_path, torn):
    """Session 1 logs epochs 1-3 and steps to 30, then dies (`torn`: mid-record); the checkpoint
    covers 2 epochs and 25 steps. Session 2's file holds epochs 1-2 and steps <= 25 of session 1,
    then its own points; the first file is gone and no tag has a step twice."""
    folder = tmp_path / "tb"
    first = curves.Curves(str(folder), str(folder), EVERY).begin()
    for s in range(1, 31):
        first.step(s, float(s))
        if s % 10 == 0:
            first.epoch({"epoch": s // 10, "loss": s / 10, "lr": 0.5})
    if torn:
        with open(first.file, "ab") as f:
            f.write(curves.record(curves.event(32, [("step/loss", 9.0)]))[:-3])
    second = curves.Curves(str(folder), str(folder), EVERY).begin(epochs_done=2, steps_done=25)
    for s in range(26, 31):
        second.step(s, -float(s))
    second.epoch({"epoch": 3, "loss": -3.0, "lr": 0.5})
    assert event_files(str(folder)) == [second.file] and not os.path.exists(first.file)
    got = scalars(str(folder), purge=False)
    assert got["step/loss"] == [(s, s) for s in range(2, 25, 2)] + [(s, -s) for s in range(26, 31, 2)]
    assert got["epoch/loss"] == [(1, 1.0), (2, 2.0), (3, -3.0)]
    assert got["epoch/lr"] == [(e, 0.5) for e in (1, 2, 3)]
    assert "epoch/accuracy" not in got  # a value the row lacks is not written
    assert scalars(str(folder)) == got  # TensorBoard's purge drops nothing more


def test_a_crash_between_two_files_still_reads_as_the_last_session(tmp_path):
    """If the earlier file outlives the new one (a kill between them), the new file's START at step 0
    makes a reader drop the earlier points, and the next resume reads it so too."""
    folder = tmp_path / "tb"
    first = curves.Curves(str(folder), str(folder), EVERY).begin()
    first.step(2, 1.0)
    first.step(4, 1.0)
    kept = open(first.file, "rb").read()
    second = curves.Curves(str(folder), str(folder), EVERY).begin(steps_done=2)
    with open(first.file, "wb") as f:  # as if the removal had not happened
        f.write(kept)
    assert scalars(str(folder))["step/loss"] == [(2, 1.0)]
    third = curves.Curves(str(folder), str(folder), EVERY).begin(steps_done=4)
    assert event_files(str(folder)) == [third.file] != [second.file]
    assert scalars(str(folder), purge=False)["step/loss"] == [(2, 1.0)]


def test_the_flag_alone_means_the_run_directorys_tb_and_a_dir_is_shared_by_run_name():
    from tlres.commands import cli

    assert cli.parse(["--tensorboard"], "quick", "p")[0].tensorboard == config.TENSORBOARD_IN_RUN
    assert cli.parse(["--tensorboard", "--epochs", "2"], "quick", "p")[0].epochs == 2
    cfg = cli.parse(["--tensorboard", "logs"], "quick", "p")[0]
    assert cfg.tensorboard == "logs" and cfg.tensorboard_every == 50
    assert cli.parse([], "quick", "p")[0].tensorboard is None
    assert curves.folder(cfg, "runs/a", curves.KERAS) == os.path.join("logs", "a", "keras-jax")
    own = cfg.replace(tensorboard=config.TENSORBOARD_IN_RUN)
    assert curves.folder(own, "runs/a", curves.PYTORCH) == os.path.join("runs/a", "tb", "pytorch")
    assert "--tensorboard-every must be >= 0" in _one_line(cfg.replace(tensorboard_every=-1).validate)


def _one_line(fn):
    try:
        fn()
    except Exception as e:
        return str(e)
    return ""


def test_an_unusable_dir_or_another_runs_curves_is_one_line(tmp_path):
    data = write_npz(tmp_path / "toy.npz", n_train=32, n_test=8)
    (tmp_path / "afile").write_text("x")
    code, _, err = in_process_main(FLAGS[:-3] + ["--data", data, "--out", str(tmp_path / "r"),
                                                 "--tensorboard", str(tmp_path / "afile")])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--tensorboard" in err and "is a file, not a directory" in err
    theirs = tmp_path / "logs" / "r" / "keras-jax"
    theirs.mkdir(parents=True)
    (theirs / "events.out.tfevents.x").write_text("someone's")
    code, _, err = in_process_main(FLAGS[:-3] + ["--data", data, "--out", str(tmp_path / "r"),
                                                 "--tensorboard", str(tmp_path / "logs"), "--overwrite"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "will not delete anything" in err, err
    assert not os.path.exists(tmp_path / "r") and (theirs / "events.out.tfevents.x").read_text() == "someone's"


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A run whose training dies in epoch 3 (after a checkpoint at its step 5, and step-level points
    past it), then resumed to the end: (run directory, the points before the resume, checkpoint step)."""
    from tlres.data import pipeline
    from tlres.run import checkpoint, rundir, train
    from tlres.commands import cli

    tmp = tmp_path_factory.mktemp("tb")
    data = write_npz(tmp / "toy.npz", n_train=160, n_test=32)
    run = str(tmp / "run")
    cfg, _ = cli.parse(FLAGS + ["--data", data, "--out", run, "--checkpoint-every", "5"], "quick", "p")
    real, mp = pipeline.train_data, pytest.MonkeyPatch()

    def dies(*a, **k):  # the 29th batch of the run is never delivered: as a kill in step 29
        for i, batch in enumerate(real(*a, **k)):
            if i == 28:
                raise RuntimeError("killed")
            yield batch

    mp.setattr(pipeline, "train_data", dies)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            train.run(cfg, verbose=0)
    finally:
        mp.undo()
    meta = checkpoint.read_meta(run)
    before = scalars(os.path.join(run, "tb", "keras-jax"), purge=False)
    train.run(rundir.resumed_config(run), verbose=0, resume=True)
    return run, before, meta["epochs_done"] * 10 + meta["step"]


@pytest.mark.slow  # trains the tiny net twice in this process (seconds each)
def test_resumed_curves_hold_history_csv_and_each_step_once(resumed):
    run, before, ckpt_step = resumed
    assert ckpt_step == 25 and max(s for s, _ in before["step/loss"]) > ckpt_step  # points to drop
    folder = os.path.join(run, "tb", "keras-jax")
    assert len(event_files(folder)) == 1
    got = scalars(folder, purge=False)
    assert scalars(folder) == got
    assert sorted(got) == sorted(curves.TAGS)
    rows = history(run)
    assert len(rows) == 3
    for tag in curves.EPOCH_TAGS:  # every history.csv value, at its epoch, once
        field = tag.split("/")[1]
        assert got[tag] == [(int(r["epoch"]), f32(r[field])) for r in rows], tag
    steps = [s for s, _ in got["step/loss"]]
    assert steps == list(range(EVERY, 31, EVERY))  # the cadence, over the whole run, once each
    loss = dict(got["step/loss"])
    for r in rows:  # the epoch's mean loss so far, at its last step, is the epoch's loss
        assert loss[10 * int(r["epoch"])] == f32(r["loss"])
    kept = [p for p in before["step/loss"] if p[0] <= ckpt_step]
    assert got["step/loss"][:len(kept)] == kept  # the points the checkpoint covers are the first run's


@pytest.mark.slow  # imports TensorFlow (seconds)
def test_tensorflows_own_reader_reads_the_files(tmp_path):
    import tensorflow as tf

    log = curves.Curves(str(tmp_path), str(tmp_path), 1).begin()
    log.epoch({"epoch": 1, "loss": 0.25, "seconds": 3.5})
    log.step(4, 0.125)
    got = [(e.step, [(v.tag, v.simple_value) for v in e.summary.value])
           for e in tf.compat.v1.train.summary_iterator(log.file)]
    assert got[2:] == [(1, [("epoch/loss", 0.25), ("epoch/seconds", 3.5)]), (4, [("step/loss", 0.125)])]


@pytest.mark.slow  # shares the resumed run above
def test_tensorboards_own_loader_reads_the_resumed_curves_as_history_csv(resumed):
    """What `tensorboard --logdir` shows: TensorBoard's own EventAccumulator (its purge rules
    applied) reads each tag's steps once, with history.csv's values at float32."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run, _, _ = resumed
    ea = accumulator.EventAccumulator(os.path.join(run, "tb", "keras-jax"))
    ea.Reload()
    assert sorted(ea.Tags()["scalars"]) == sorted(curves.TAGS)
    for tag in curves.EPOCH_TAGS:
        field = tag.split("/")[1]
        assert [(e.step, e.value) for e in ea.Scalars(tag)] == [
            (int(r["epoch"]), f32(r[field])) for r in history(run)], tag
    assert [e.step for e in ea.Scalars("step/loss")] == list(range(EVERY, 31, EVERY))
