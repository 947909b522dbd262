"""Issue #7: resume after SIGKILL, deterministic reruns, the NaN stop, run-directory states.

All runs use `--arch tiny` on a small npz written here, so the whole file costs
a few process start-ups (~30 s each on the 2-core CI machine: importing
TensorFlow, JAX and Keras) plus seconds of training.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ROOT, cli, history, read, without_seconds, write_npz
EPOCHS = 4


def _cpu_only(reason="bit-identical reruns are promised on one CPU host and software stack; on a "
                     "GPU, XLA's reductions and cuDNN's autotuning may reorder sums between "
                     "processes (docs/reproducibility.md, Determinism)"):
    import jax

    return pytest.mark.skipif(jax.default_backend() != "cpu", reason=reason)
FLAGS = ["--preset", "quick", "--arch", "tiny", "--batch-size", "32", "--epochs", str(EPOCHS),
         "--lr", "0.005", "--flip", "--seed", "7"]  # flip on: augmentation draws are part of what must replay



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, and one SIGKILLed after its first checkpoint and then resumed.

    The two start together as real processes (two cores). The resume runs in
    this test process through the command line's `main`: a process that never
    trained, which is what matters, without paying another ~30 s start-up.
    """
    from tlres.commands import train as train_cmd

    tmp = tmp_path_factory.mktemp("reliability")
    data = write_npz(tmp / "toy.npz")
    full, killed = str(tmp / "full"), str(tmp / "killed")
    kw = dict(cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    p_full = subprocess.Popen(cli(*FLAGS, "--data", data, "--out", full), **kw)
    p_kill = subprocess.Popen(cli(*FLAGS, "--data", data, "--out", killed), **kw)
    ckpt = os.path.join(killed, "ckpt", "checkpoint.npz")
    deadline = time.time() + 400
    while not os.path.exists(ckpt) and p_kill.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    p_kill.send_signal(signal.SIGKILL)
    p_kill.communicate()
    killed_state = {"status": read(killed, "status.json"), "metrics": os.path.exists(
        os.path.join(killed, "metrics.json")), "rows": len(history(killed))}
    with np.load(ckpt) as f:
        killed_state["epochs_done"] = json.loads(f["meta"].tobytes().decode())["epochs_done"]
    capsys = pytest.MonkeyPatch()  # capture the resume's stdout without the function-scoped capsys
    import io

    buf = io.StringIO()
    capsys.setattr(sys, "stdout", buf)
    try:
        code = train_cmd.main(["--resume", killed], "prog")
    finally:
        capsys.undo()
    out_full, _ = p_full.communicate(timeout=600)
    assert p_full.returncode == 0, out_full[-3000:]
    assert code == 0, buf.getvalue()[-3000:]
    return {"data": data, "full": full, "killed": killed, "killed_state": killed_state,
            "resume_stdout": buf.getvalue(), "tmp": tmp}


@pytest.mark.slow  # the runs fixture: real tiny-net training in several processes
def test_kill_really_interrupted_the_run(runs):
    s = runs["killed_state"]
    assert s["status"]["state"] == "running"  # SIGKILL: no handler ran, the file says so
    assert not s["metrics"]                     # nothing that looks complete
    assert 1 <= s["epochs_done"] < EPOCHS
    assert f"resuming after epoch {s['epochs_done']}" in runs["resume_stdout"]


@pytest.mark.slow  # the runs fixture: real tiny-net training in several processes
@_cpu_only()
def test_resumed_run_equals_uninterrupted_run_metric_for_metric(runs):
    """Exact, byte for byte: the same code, data and seed on one host and software stack."""
    full, killed = runs["full"], runs["killed"]
    assert read(killed, "metrics.json") == read(full, "metrics.json")
    assert without_seconds(history(killed)) == without_seconds(history(full))
    assert [int(r["epoch"]) for r in history(killed)] == list(range(1, EPOCHS + 1))
    with open(os.path.join(full, "predictions.csv")) as a, \
            open(os.path.join(killed, "predictions.csv")) as b:
        assert a.read() == b.read()
    assert read(killed, "status.json")["state"] == "finished"
    assert read(killed, "status.json")["resumed_from_epoch"] == runs["killed_state"]["epochs_done"]
    m = read(full, "metrics.json")
    assert m["accuracy"] > 0.5  # it learned something (4 classes): equal results are not trivial


@pytest.mark.slow  # the runs fixture: real tiny-net training in several processes
@_cpu_only()
def test_same_seed_and_config_give_identical_metrics_json_in_another_process(runs):
    """Exact, byte for byte, on one host and software stack (not across CPUs: docs/reproducibility.md)."""
    from tlres.commands import cli as cli_lib
    from tlres.run import train

    again = str(runs["tmp"] / "again")
    cfg, _ = cli_lib.parse(FLAGS + ["--data", runs["data"], "--out", again], "improved", "prog")
    train.run(cfg, verbose=0)
    with open(os.path.join(runs["full"], "metrics.json")) as a, \
            open(os.path.join(again, "metrics.json")) as b:
        assert a.read() == b.read()  # byte for byte
    other = str(runs["tmp"] / "other-seed")
    train.run(cfg.replace(seed=8, out=other), verbose=0)
    assert read(other, "metrics.json") != read(again, "metrics.json")  # the seed matters


@pytest.mark.slow  # the runs fixture: real tiny-net training in several processes
def test_resume_refuses_a_finished_run_and_other_flags(runs, capsys):
    from tlres.commands import train as train_cmd

    assert train_cmd.main(["--resume", runs["full"]], "prog") == 2
    assert "already finished" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        train_cmd.main(["--resume", runs["killed"], "--epochs", "9"], "prog")
    assert e.value.code == 2 and "drop --epochs" in capsys.readouterr().err


@pytest.mark.slow  # the runs fixture: real tiny-net training in several processes
def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_checkpoint(runs, capsys):
    """An absurd --lr-min 1e38: by eq. 14 epoch 1 trains at 0.005 + (1e38 - 0.005) ... = 0 (float
    cancellation) and epoch 2 at 5e37, so the loss overflows early in epoch 2, after a checkpoint."""
    from tlres.commands import train as train_cmd

    out = str(runs["tmp"] / "nan")
    code = train_cmd.main(FLAGS[:-2] + ["--epochs", "2", "--lr-min", "1e38", "--data",
                                        runs["data"], "--out", out], "prog")
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("prog:")]
    assert code == 3
    assert len(err) == 1 and "non-finite training loss" in err[0] and "at epoch 2, step " in err[0]
    step = int(err[0].split("at epoch 2, step ")[1].split(";")[0])
    assert 1 <= step <= 32
    assert "end of epoch 1" in err[0]
    status = read(out, "status.json")
    assert status["state"] == "failed" and "non-finite" in status["error"]
    assert status["epochs_done"] == 1
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    with np.load(os.path.join(out, "ckpt", "checkpoint.npz")) as f:
        meta = json.loads(f["meta"].tobytes().decode())
        assert meta["epochs_done"] == 1
        assert all(np.isfinite(f[k]).all() for k in f.files if k.startswith("w"))
    assert len(history(out)) == 1  # epoch 2 never finished


def test_a_run_from_before_conv_existed_resumes_on_the_kernel_it_started_with(tmp_path):
    import dataclasses

    from tlres.run import rundir
    from tlres.core.config import QUICK

    saved = dataclasses.asdict(QUICK.replace(epochs=3))
    del saved["conv"]
    (tmp_path / "status.json").write_text('{"state": "failed"}')
    dataset = {"num_train": 8, "num_test": 4, "num_classes": 2}  # what a resume checks too
    (tmp_path / "config.json").write_text(json.dumps({"config": saved, "dataset": dataset}))
    cfg = rundir.resumed_config(str(tmp_path))
    assert cfg.conv == "xla" and cfg.epochs == 3  # not "auto": that would switch kernels mid-run
    saved["conv"] = "matmul"
    (tmp_path / "config.json").write_text(json.dumps({"config": saved, "dataset": dataset}))
    assert rundir.resumed_config(str(tmp_path)).conv == "matmul"


def test_compile_cache_is_one_folder_per_xla_flags_setting(tmp_path):
    """Executables and XLA's GPU autotuning results compiled under one XLA_FLAGS setting are
    never read under another (JAX keeps the autotuning results in the cache folder, keyed by
    fusion alone): the folder JAX is given depends on the flags, not on their order."""
    import subprocess
    import sys

    from tlres.net.backend import cache_dir_for_flags

    base = str(tmp_path)
    det = "--xla_gpu_deterministic_ops=true --xla_gpu_autotune_level=0"
    assert cache_dir_for_flags(base, "") == base
    assert cache_dir_for_flags(base, "  ") == base
    a = cache_dir_for_flags(base, det)
    assert os.path.dirname(a) == base and a != base
    assert cache_dir_for_flags(base, " ".join(reversed(det.split()))) == a
    assert cache_dir_for_flags(base, "--xla_gpu_deterministic_ops=true") not in (a, base)

    code = ("import jax; from tlres.net import backend; backend.enable_compile_cache({!r}); "
            "print(jax.config.jax_compilation_cache_dir)").format(base)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert got == cache_dir_for_flags(base, "--xla_force_host_platform_device_count=1") != base
    assert os.path.isdir(got)
