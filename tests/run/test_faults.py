"""The faults a long run meets, made real: SIGTERM, a second signal, SIGKILL between mid-epoch
checkpoints, a file size limit (EFBIG), a really full filesystem (a small tmpfs), and the
temporary files a killed process leaves behind.

One fixture starts every faulted run as its own process at once (each pays ~30 s of imports on
the 2-core CI machine, so they overlap), trains the uninterrupted reference in this process,
then resumes the faulted runs in this process through the command line's `main` (a process
that never trained, which is what matters). A resumed run must equal the reference byte for
byte (`metrics.json`, `predictions.csv`) and row for row (`history.csv` less `seconds`): the
same host and software stack, so exact equality is the documented guarantee, not a tolerance.
"""

import io
import os
import resource
import shlex
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from helpers import PROG, cli, in_process_main, read, without_seconds, write_npz
from helpers import history as recorded_history
from tlres.core.errors import human

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, EVERY = 80, 5  # 1280 training images / batch 16; checkpoints at steps 5, 10, ... of each epoch
FLAGS = ["--preset", "quick", "--arch", "tiny", "--batch-size", "16", "--epochs", "3", "--lr", "0.005",
         "--augment", "--flip", "--seed", "3",  # augmentation on: its draws are part of what must replay
         "--no-compile-cache"]  # nothing written outside the run directory (the EFBIG run's limit)


def history(run):
    return without_seconds(recorded_history(run))


def meta(run):
    from tlres.run import checkpoint

    return checkpoint.read_meta(run)


def tmp_files(run):
    return [os.path.join(root, n) for root, dirs, files in os.walk(run)
            for n in dirs + files if n.endswith(".tmp")]


def tlres_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith((f"{PROG}:", "tlres:"))]


def mid_epoch(run):
    """Trigger: a checkpoint within epoch 2 or later (the first epoch has finished)."""
    m = meta(run)
    return m is not None and m["epochs_done"] >= 1 and m["step"] > 0


def mount_tmpfs(path, size):
    """Mount a tmpfs of `size` at `path`; None, or why it cannot be done here."""
    os.makedirs(path, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot run mount ({e})"
    return None if r.returncode == 0 else f"mount -t tmpfs failed (needs root): {r.stderr.strip()}"



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tlres.commands import cli as cli_lib
    from tlres.run import train

    tmp = tmp_path_factory.mktemp("faults")
    data = write_npz(tmp / "toy.npz", n_train=STEPS * 16)
    base = FLAGS + ["--data", data]

    def start(name, *args, **extra):  # stderr to a file: an unread pipe could fill and block the run
        err = open(tmp / f"{name}.err", "w+")
        return subprocess.Popen(cli(*args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, **extra)

    def finish(name, p):
        p.wait(timeout=600)
        with open(tmp / f"{name}.err") as f:
            return f.read()
    r = {"tmp": tmp, "data": data}
    d = {name: str(tmp / name) for name in ("term", "kill", "twice")}

    mnt = tmp / "mnt"
    r["tmpfs_skip"] = mount_tmpfs(mnt, "2m")
    if not r["tmpfs_skip"]:
        d["full"] = str(mnt / "run")
    procs = {name: start(name, *base, "--checkpoint-every", str(EVERY), "--out", out)
             for name, out in d.items()}
    try:
        pending = dict(procs)
        deadline = time.time() + 600
        while pending and time.time() < deadline:
            for name, p in list(pending.items()):
                out = d[name]
                if p.poll() is not None:
                    del pending[name]
                elif name == "full" and os.path.exists(os.path.join(out, "ckpt", "checkpoint.npz")):
                    st = os.statvfs(mnt)  # another job fills the disk: 20 kB stay free
                    with open(mnt / "filler", "wb") as f:
                        f.write(b"\0" * (st.f_bavail * st.f_frsize - 20_000))
                    del pending[name]
                elif name != "full" and mid_epoch(out):
                    if name == "term":
                        p.send_signal(signal.SIGTERM)
                    elif name == "kill":
                        p.send_signal(signal.SIGKILL)
                    else:  # both pending at once, so one handler runs right after the other
                        p.send_signal(signal.SIGSTOP)
                        p.send_signal(signal.SIGINT)
                        p.send_signal(signal.SIGTERM)
                        p.send_signal(signal.SIGCONT)
                    del pending[name]
            time.sleep(0.005)
        for name, p in procs.items():
            err = finish(name, p)
            r[name] = {"dir": d[name], "rc": p.returncode, "lines": tlres_lines(err), "stderr": err,
                       "status": read(d[name], "status.json"), "meta": meta(d[name]),
                       "tmp": tmp_files(d[name]), "rows": len(history(d[name]))}
            with open(os.path.join(d[name], "ckpt", "checkpoint.npz"), "rb") as f:
                r[name]["ckpt_bytes"] = f.read()

        # a file size limit below the checkpoint: resume a copy of the SIGTERMed run under it
        efbig = str(tmp / "efbig")
        shutil.copytree(d["term"], efbig)
        limit = len(r["term"]["ckpt_bytes"]) // 2  # above status.json and history.csv, below a checkpoint

        def limited():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

        p_efbig = start("efbig", "--resume", efbig, preexec_fn=limited)

        # the reference: uninterrupted, no mid-epoch checkpoints, in this process meanwhile
        cfg, _ = cli_lib.parse(base + ["--out", str(tmp / "reference")], "improved", PROG)
        r["reference"] = train.run(cfg, verbose=0)

        # resume each faulted run here, the SIGTERMed one with the very command it printed
        line = r["term"]["lines"][-1] if r["term"]["lines"] else ""
        argv = shlex.split(line.split("continue with: ", 1)[-1])
        r["term"]["command"] = argv
        r["term"]["resumed"] = in_process_main(argv[3:])
        stale = {"ckpt/checkpoint.npz.tmp": 5000, "status.json.tmp": 0}  # what a killed writer leaves
        for rel, n in stale.items():
            with open(os.path.join(d["kill"], rel), "wb") as f:
                f.write(os.urandom(n))
        os.makedirs(os.path.join(d["kill"], "model.keras.tmp"))
        r["stale"] = sorted(stale) + ["model.keras.tmp"]
        r["kill"]["resumed"] = in_process_main(["--resume", d["kill"]])
        r["twice"]["resumed"] = in_process_main(["--resume", d["twice"]])
        if "full" in d:
            os.remove(mnt / "filler")  # the user frees space, then continues
            r["full"]["resumed"] = in_process_main(["--resume", d["full"]])
            r["full"]["final"] = {"metrics": read(d["full"], "metrics.json"), "history": history(d["full"])}

        err = finish("efbig", p_efbig)
        r["efbig"] = {"dir": efbig, "rc": p_efbig.returncode, "lines": tlres_lines(err), "stderr": err,
                      "limit": limit, "status": read(efbig, "status.json"), "tmp": tmp_files(efbig)}
        with open(os.path.join(efbig, "ckpt", "checkpoint.npz"), "rb") as f:
            r["efbig"]["ckpt_bytes"] = f.read()
        yield r
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        if not r["tmpfs_skip"]:
            subprocess.run(["umount", str(mnt)], capture_output=True)


def same_result(run, reference):
    for name in ("metrics.json", "predictions.csv"):
        with open(os.path.join(run, name)) as a, open(os.path.join(reference, name)) as b:
            assert a.read() == b.read(), name
    assert history(run) == history(reference)
    assert read(run, "status.json")["state"] == "finished"


def test_reference_learned_something(runs):
    assert read(runs["reference"], "metrics.json")["accuracy"] > 0.5  # 4 classes: equality is not trivial


def test_sigterm_mid_epoch_checkpoints_that_step_and_prints_the_resume_command(runs):
    t = runs["term"]
    assert t["rc"] == 143, t["stderr"][-3000:]
    assert len(t["lines"]) == 1, t["lines"]
    m = t["meta"]
    assert m["step"] > 0, "the signal landed in an epoch's last step; the test needs it mid-epoch"
    assert t["lines"][0] == (f"{PROG}: interrupted by SIGTERM; checkpoint written at epoch "
                             f"{m['epochs_done'] + 1}, step {m['step']} of {STEPS}; continue with: "
                             f"{t['status']['resume']}")
    s = t["status"]
    assert (s["state"], s["signal"], s["epochs_done"], s["step"], s["checkpoint_at_signal"]) == \
        ("interrupted", "SIGTERM", m["epochs_done"], m["step"], True)
    assert t["command"][1:] == ["-m", "tlres.experiments.improved", "--resume", os.path.abspath(t["dir"])]
    assert t["tmp"] == []
    assert t["rows"] == m["epochs_done"]  # per epoch: the epoch in progress has no row


def test_sigterm_then_the_printed_resume_command_equals_the_uninterrupted_run(runs):
    code, out, err = runs["term"]["resumed"]
    assert code == 0, err[-3000:]
    m = runs["term"]["meta"]
    assert f"(resuming at epoch {m['epochs_done'] + 1}, step {m['step']} of {STEPS})" in out
    same_result(runs["term"]["dir"], runs["reference"])


def test_sigkill_between_mid_epoch_checkpoints_resumes_identically(runs):
    k = runs["kill"]
    assert k["rc"] == -signal.SIGKILL
    assert k["status"]["state"] == "running"  # no handler ran
    assert k["meta"]["step"] > 0 and k["meta"]["step"] % EVERY == 0  # a --checkpoint-every one
    code, out, err = k["resumed"]
    assert code == 0, err[-3000:]
    same_result(k["dir"], runs["reference"])


def test_resume_removes_stale_temporary_files_in_one_line(runs):
    _, out, _ = runs["kill"]["resumed"]
    lines = [line for line in out.splitlines() if "temporary files" in line]
    assert len(lines) == 1, out
    assert lines[0].startswith("tlres: removed 3 temporary files an earlier process left behind: ")
    for rel in runs["stale"]:
        assert rel in lines[0]
    assert "ckpt/checkpoint.npz.tmp (5000 bytes)" in lines[0]
    assert tmp_files(runs["kill"]["dir"]) == []


def test_a_second_signal_exits_at_once_and_keeps_the_last_complete_checkpoint(runs):
    t = runs["twice"]
    assert len(t["lines"]) == 1, t["stderr"][-3000:]
    second = t["lines"][0].split("interrupted by a second ")[-1].split(",")[0]  # the order is the OS's
    assert second in ("SIGINT", "SIGTERM")
    assert t["rc"] == 128 + getattr(signal, second)  # the second signal's status: 130 or 143
    assert t["lines"][0].startswith(
        f"tlres: interrupted by a second {second}, at once; the last complete checkpoint (epoch "), t["lines"]
    assert t["lines"][0].endswith(f"continue with: {t['status']['resume']}")
    s, m = t["status"], t["meta"]
    assert (s["state"], s["checkpoint_at_signal"]) == ("interrupted", False)
    assert (s["epochs_done"], s["step"]) == (m["epochs_done"], m["step"])
    assert m["step"] % EVERY == 0  # a scheduled checkpoint: none was written for the signal
    assert t["tmp"] == []
    with np.load(io.BytesIO(t["ckpt_bytes"])) as f:  # complete: every array reads
        assert all(np.isfinite(f[k]).all() for k in f.files if k != "meta")
    code, _, err = t["resumed"]
    assert code == 0, err[-3000:]
    same_result(t["dir"], runs["reference"])


def test_file_size_limit_on_the_checkpoint_write_is_one_line_and_keeps_the_checkpoint(runs):
    e, term = runs["efbig"], runs["term"]
    assert e["rc"] == 4, e["stderr"][-3000:]
    assert len(e["lines"]) == 1, e["lines"]
    line = e["lines"][0]
    ckpt = os.path.join(e["dir"], "ckpt", "checkpoint.npz")
    assert line.startswith(f"{PROG}: error: cannot write {ckpt}: over this process' file size limit "
                           "(ulimit -f) of "), line

    assert f"of {human(e['limit'])}: it needs about " in line
    needed = line.split("it needs about ")[1].split(" (")[0]
    value, unit = needed.split()
    assert float(value) * {"kB": 1e3, "MB": 1e6}[unit] > e["limit"]  # it really needed more
    from tlres.run import preempt

    assert "; the last complete checkpoint (epoch " in line
    assert line.endswith("; raise the file size limit (ulimit -f), then continue with: "
                         f"{preempt.resume_command(e['dir'])}")
    assert e["ckpt_bytes"] == term["ckpt_bytes"]  # the previous checkpoint, byte for byte
    assert e["tmp"] == []
    s = e["status"]
    assert s["state"] == "failed" and "DiskFull" in s["error"] and "file size limit" in s["error"]
    assert (s["epochs_done"], s["step"]) == (term["meta"]["epochs_done"], term["meta"]["step"])


def test_a_really_full_filesystem_is_one_line_keeps_the_checkpoint_and_resumes_after(runs):
    if runs["tmpfs_skip"]:
        pytest.skip(runs["tmpfs_skip"])
    f = runs["full"]
    assert f["rc"] == 4, f["stderr"][-3000:]
    assert len(f["lines"]) == 1, f["lines"]
    line = f["lines"][0]
    ckpt = os.path.join(f["dir"], "ckpt", "checkpoint.npz")
    assert line.startswith(f"{PROG}: error: cannot write {ckpt}: no space left on its filesystem: "
                           "it needs about "), line
    free = line.split(", ")[1].split(" free")[0]  # '16.4 kB': the ~20 kB the filler left, less pages
    value, unit = free.split()
    assert unit == "kB" and 4 <= float(value) <= 20.5
    s, m = f["status"], f["meta"]
    assert s["state"] == "failed" and "no space left" in s["error"]
    assert (s["epochs_done"], s["step"]) == (m["epochs_done"], m["step"]) and m["step"] > 0
    assert f["tmp"] == []
    code, _, err = f["resumed"]  # space freed: it continues to the uninterrupted run's result
    assert code == 0, err[-3000:]
    assert f["final"]["metrics"] == read(runs["reference"], "metrics.json")
    assert f["final"]["history"] == history(runs["reference"])


def test_preflight_refuses_a_filesystem_too_small_before_training(tmp_path, runs):
    mnt = tmp_path / "small"
    why = mount_tmpfs(mnt, "400k")
    if why:
        pytest.skip(why)
    try:
        out = str(mnt / "run")
        code, stdout, err = in_process_main(FLAGS + ["--data", runs["data"], "--out", out])
        lines = [line for line in err.splitlines() if line.startswith(PROG)]
        assert code == 4
        assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: --out {out}: ")
        assert "free on its filesystem, but the run needs about" in lines[0]
        assert "Epoch" not in stdout and "preset on" not in stdout  # stopped before training
        assert not os.path.exists(out)  # nothing left behind
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# ---------------------------------------------------------------- in-process pieces


@pytest.mark.parametrize("which", ["tf", "jax"])
def test_a_pipeline_started_at_step_k_gives_that_epochs_own_batches_from_k(which):
    """Batch b of epoch e is a function of (seed, e, b): skipping k batches must not shift
    the order or the augmentation draws of the rest, nor touch the next epoch."""
    from tlres.data import pipeline
    from tlres.core.config import QUICK

    if which == "tf":
        pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    y = np.arange(40) % 4
    cfg = QUICK.replace(batch_size=8, augment=True, flip=True, crop_padding=4, seed=9, pipeline=which)

    def batches(start_step):
        return [(np.asarray(bx), np.asarray(by))
                for bx, by in pipeline.train_data(x, y, cfg, 2, 4, start_step=start_step)]

    full, resumed = batches(0), batches(3)
    assert len(full) == 10 and len(resumed) == 7  # 5 steps an epoch, epochs 2 and 3
    for (ax, ay), (bx, by) in zip(full[3:], resumed):
        np.testing.assert_array_equal(ax, bx)
        np.testing.assert_array_equal(ay, by)


def test_checkpoint_size_estimate_bounds_the_real_file(tmp_path):
    """The pre-flight estimate is an upper bound of a real checkpoint, and not by much: at most the
    per-array allowance (PER_ARRAY bytes of zip and .npy headers each) and the record's slack."""
    from tlres.net import model
    from tlres.run import checkpoint, rundir, train
    from tlres.core.config import QUICK

    cfg = QUICK.replace(arch="tiny")
    net = model.build(4, cfg)
    train.compile_model(net, cfg, 4, 10)
    net.optimizer.build(net.trainable_variables)
    net.evaluate(np.zeros((2, 32, 32, 3), np.float32), np.zeros(2, np.int32), verbose=0)  # metrics built
    rows = [{k: 0.123456789012345678 for k in rundir.HISTORY_FIELDS}] * 3
    checkpoint.save(str(tmp_path), net, 1, rows, step=4, epoch_state={"lr": 0.001, "seconds": 1.5})
    real = os.path.getsize(checkpoint.path(str(tmp_path)))
    estimate = checkpoint.estimate_bytes(net, 3)
    n = len(net.weights) + len(net.optimizer.variables) + len(net.metrics_variables) + 1
    assert real <= estimate <= real + n * checkpoint.PER_ARRAY + 4096


def test_a_failed_write_removes_its_temporary_file_and_keeps_the_old_one(tmp_path):
    from tlres.run import writes

    target = tmp_path / "status.json"
    writes.atomic_text(str(target), "old\n")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("the writer failed")

    with pytest.raises(RuntimeError):
        writes.atomic(str(target), broken)
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["status.json"]


def test_interrupted_exit_statuses_and_the_one_line_the_command_line_prints(capsys):
    from tlres.commands import cli
    from tlres.run.preempt import Interrupted

    assert (Interrupted(signal.SIGTERM).exit_code, Interrupted(signal.SIGINT).exit_code) == (143, 130)

    def stopped():
        e = Interrupted(signal.SIGTERM)
        e.message = "interrupted by SIGTERM; continue with: python -m tlres.experiments.improved --resume R"
        raise e

    assert cli.guarded("prog", False, stopped) == 143
    assert capsys.readouterr().err == ("prog: interrupted by SIGTERM; continue with: "
                                       "python -m tlres.experiments.improved --resume R\n")
