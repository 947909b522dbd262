"""Several processes train one run: real processes on localhost (gloo collectives, one CPU device each).

The reference is one process with 2 forced CPU devices and --data-parallel, which
tests/run/test_data_parallel.py holds to the single-device result; two processes with one
device each must give what it gives, with the same tolerances, derived there:

* one SGD step from the same weights on the same batch of 64: in float64 the updates agree
  to STEP64_TOL (1e-12) of the largest; in float32 the two-process update is within
  STEP32_FACTOR (4x) of the reference's own float32 distance from float64. A process feeding
  the wrong rows, or both feeding the whole batch (a global batch of 128), or augmentation
  draws paired with the wrong images, is off by far more;
* two epochs of the quick preset's tiny-net run through the runner, with augmentation on
  (so each process' share of every batch's flips and crops is checked), in float64, on the
  JAX pipeline (tlres cuts each process' rows) and on tf.data (Keras shards it): losses to
  LOSS_TOL (1e-9), accuracies, correct counts and predictions exactly. Evaluation covers
  the whole test split: 360 rows, each once.

``--cluster auto`` runs for real too: two processes in a faked SLURM job step on this host (the
variables srun sets, node list localhost, a job id whose coordinator port is free here) train the
reference's two epochs on the JAX pipeline and must give its result as well; tlres reads those
variables as jax.distributed's own detection does, which the test holds to JAX's values for
SLURM's and Open MPI's forms. Outside a cluster, ``--cluster auto`` is one line, exit 2.

Only process 0 writes: process 1 is given its own --out, which must never appear. A SIGKILLed
process 1 makes process 0 exit non-zero with one line naming it within LOST_BOUND_S,
the checkpoint stays, a resume with another process count is refused, and a resumed
2-process run finishes. Bad flags: one line, exit 2.
"""

import json
import os
import random
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import CLUSTER_VARS, ENV, FLOAT64, LOSS_TOL, STEP32_FACTOR, STEP64_TOL, free_port, tail, write_npz

from helpers import PROG, ROOT
LOST_BOUND_S = 60  # a lost process ends the others within this (tlres.run.distributed.HEARTBEAT_S = 30)


def slurm_job(procid, job_id):
    """The variables srun sets that JAX's SLURM detection reads, for task `procid` of a 2-task step on this host."""
    return {"SLURM_JOB_ID": str(job_id), "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2",
            "SLURM_STEP_NUM_NODES": "1", "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(procid)}


def slurm_job_id():
    """(job id, port): a SLURM job id whose coordinator port is free here. JAX does not take a port
    from SLURM: it derives one, 61440 + job id mod 4096 (jax/_src/clusters/slurm_cluster.py)."""
    for port in random.sample(range(61440, 65536), 64):
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
        return 4096 * 977 + port - 61440, port
    raise RuntimeError("no free port in 61440..65535")


SCRIPT = FLOAT64 + r"""
import os
from tlres.run import distributed
role, port = sys.argv[2], sys.argv[3]  # role: ref (1 process, 2 devices), the process id, or auto
base = QUICK.replace(arch="tiny", epochs=2, compile_cache=False, augment=True, flip=True,
                     data_parallel=True)
if role == "auto":  # a SLURM job step: the process count, id and coordinator from its variables
    base = base.replace(cluster="auto")
elif role != "ref":
    base = base.replace(num_processes=2, process_id=int(role), coordinator=f"127.0.0.1:{port}")
res = {"fed": []}
from tlres.data import pipeline
_jax_batches = pipeline.jax_batches


def jax_batches(*a, **k):  # what this process feeds: the first batch's labels and per-row pixel sums
    for xb, yb in _jax_batches(*a, **k):
        if not res["fed"]:
            res["fed"] = [np.asarray(yb).tolist(), np.asarray(xb, np.float64).sum(axis=(1, 2, 3)).tolist()]
        yield xb, yb


pipeline.jax_batches = jax_batches
float64(True)
for pipe in ("jax",) if role == "auto" else ("jax", "tf"):
    run_out = f"{out}/{role}-{pipe}" if role in ("ref", "0", "auto") else f"{out}/process1-{pipe}"
    train.run(base.replace(out=run_out, precision="float64", pipeline=pipe), verbose=0)
    if role in ("ref", "0") or role == "auto" and jax.process_index() == 0:
        res[pipe] = {"history": list(csv.DictReader(open(f"{run_out}/history.csv"))),
                     "metrics": json.load(open(f"{run_out}/metrics.json")),
                     "device": json.load(open(f"{run_out}/config.json"))["device"],
                     "files": sorted(os.listdir(run_out)),
                     "predictions": list(csv.DictReader(open(f"{run_out}/predictions.csv")))}
res["devices"], res["processes"], res["index"] = len(jax.devices()), jax.process_count(), jax.process_index()
if role == "auto":  # as srun starts them: the same command line, told apart by SLURM_PROCID
    json.dump(res, open(f"{out}/result-auto{jax.process_index()}.json", "w"))
    sys.exit(0)

# one SGD step from the same weights on the same global batch; each process feeds its rows of it
sgd = base.replace(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant",
                   label_smoothing=0.0)
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 32, 32, 3)).astype("float32")
y = rng.integers(0, 10, 64).astype("int32")
arrays, start = {}, None
for prec in ("float64", "float32"):
    float64(prec == "float64")
    cfg = sgd.replace(precision=prec)
    train.setup_engine(cfg)
    net = model.build(10, cfg)
    train.compile_model(net, cfg, 10, steps_per_epoch=1)
    start = start or [np.asarray(w, np.float64) for w in net.get_weights()]  # both from float64's
    net.set_weights([w.astype(prec) for w in start])
    rows = distributed.local_rows(64)
    res["rows"] = [rows.start, rows.stop]
    net.train_on_batch(x[rows].astype(prec), y[rows])
    for i, (w, w0) in enumerate(zip(net.get_weights(), start)):
        arrays[f"{prec}_start{i}"] = w0
        arrays[f"{prec}_delta{i}"] = np.asarray(w, np.float64) - w0
np.savez(f"{out}/step-{role}.npz", **arrays)
json.dump(res, open(f"{out}/result-{role}.json", "w"))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 2-process runs (the flags' form, and --cluster auto in a faked SLURM job step) and the
    1-process, 2-device reference, started together; meanwhile the bad-flag processes, which end
    on their own."""
    out = tmp_path_factory.mktemp("dist")
    port = free_port()
    logs = {}

    def start(name, argv, **env):
        logs[name] = open(out / f"{name}.log", "w+")
        return subprocess.Popen(argv, cwd=ROOT, stdout=logs[name], stderr=subprocess.STDOUT,
                                env={**ENV, **env})

    t0 = time.time()
    procs = {role: start(role, [sys.executable, "-c", SCRIPT, str(out), role, str(port)])
             for role in ("0", "1")}
    procs["ref"] = start("ref", [sys.executable, "-c", SCRIPT, str(out), "ref", "0"],
                         XLA_FLAGS="--xla_force_host_platform_device_count=2")
    job, _ = slurm_job_id()
    for i in (0, 1):
        procs[f"auto{i}"] = start(f"auto{i}", [sys.executable, "-c", SCRIPT, str(out), "auto", "0"],
                                  **slurm_job(i, job))
    # nobody listens on this port: process 1 must give up after --coordinator-timeout
    nobody = free_port()
    procs["unreachable"] = start("unreachable", [
        sys.executable, "-m", "tlres.experiments.improved", "--preset", "quick", "--arch", "tiny",
        "--data-parallel", "--num-processes", "2", "--process-id", "1", "--coordinator-timeout", "3",
        "--coordinator", f"127.0.0.1:{nobody}", "--out", str(out / "unreachable-run")])
    # the same under --cluster auto, where JAX itself would abort process 1 (no Python exception)
    job_nobody, _ = slurm_job_id()
    procs["unreachable-auto"] = start("unreachable-auto", [
        sys.executable, "-m", "tlres.experiments.improved", "--preset", "quick", "--arch", "tiny",
        "--data-parallel", "--cluster", "auto", "--coordinator-timeout", "3",
        "--out", str(out / "unreachable-auto-run")], **slurm_job(1, job_nobody))
    try:
        r = {"out": out}
        for name, p in procs.items():
            p.wait(timeout=900)
            logs[name].seek(0)
            r[name] = {"rc": p.returncode, "log": logs[name].read(), "seconds": time.time() - t0}
        for role in ("0", "ref"):
            assert r[role]["rc"] == 0, tail(r[role]["log"])
            r[role]["result"] = json.load(open(out / f"result-{role}.json"))
            with np.load(out / f"step-{role}.npz") as f:
                r[role]["step"] = dict(f)
        assert r["1"]["rc"] == 0, tail(r["1"]["log"])
        r["1"]["result"] = json.load(open(out / "result-1.json"))
        for i in (0, 1):
            assert r[f"auto{i}"]["rc"] == 0, tail(r[f"auto{i}"]["log"])
            r[f"auto{i}"]["result"] = json.load(open(out / f"result-auto{i}.json"))
        yield r
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_two_processes_form_one_cluster(runs):
    mp, ref = runs["0"]["result"], runs["ref"]["result"]
    assert (mp["devices"], mp["processes"]) == (2, 2)
    assert (ref["devices"], ref["processes"]) == (2, 1)
    assert runs["1"]["result"]["processes"] == 2
    assert mp["jax"]["device"]["count"] == 2 and mp["jax"]["device"]["processes"] == 2
    # each process feeds its half of the global batch of 64, the reference the whole
    assert (mp["rows"], runs["1"]["result"]["rows"], ref["rows"]) == ([0, 32], [32, 64], [0, 64])
    # and the JAX pipeline feeds just that: the first global batch's rows, augmented as in one process
    (y0, s0), (y1, s1), (yr, sr) = mp["fed"], runs["1"]["result"]["fed"], ref["fed"]
    assert len(y0) == len(y1) == 32 and y0 + y1 == yr
    np.testing.assert_allclose(s0 + s1, sr, rtol=1e-12)


@pytest.mark.slow
def test_one_sgd_step_on_two_processes_makes_the_single_process_update(runs):
    mp, ref = runs["0"]["step"], runs["ref"]["step"]
    n = sum(1 for k in ref if k.startswith("float64_delta"))
    for prec in ("float64", "float32"):  # from the same weights (seeded builds, checked)
        for i in range(n):
            assert np.array_equal(mp[f"{prec}_start{i}"], ref[f"{prec}_start{i}"])

    def distance(a, pa, b, pb):
        return max(float(np.abs(a[f"{pa}_delta{i}"] - b[f"{pb}_delta{i}"]).max()) for i in range(n))

    largest = max(float(np.abs(ref[f"float64_delta{i}"]).max()) for i in range(n))
    assert largest > 1e-3  # the step moved the weights
    assert distance(mp, "float64", ref, "float64") <= STEP64_TOL * largest
    ref32 = distance(ref, "float32", ref, "float64")
    assert 0 < ref32 < 1e-4 * largest
    assert distance(mp, "float32", ref, "float64") <= STEP32_FACTOR * ref32


@pytest.mark.slow
@pytest.mark.parametrize("pipe", ["jax", "tf"])
def test_two_processes_give_the_single_process_result(runs, pipe):
    assert_same_run(runs["0"]["result"][pipe], runs["ref"]["result"][pipe])


def assert_same_run(mp, ref):
    """A multi-process run's history, metrics and predictions are the 1-process, 2-device run's."""
    assert len(mp["history"]) == len(ref["history"]) == 2
    for a, b in zip(mp["history"], ref["history"]):
        assert a["lr"] == b["lr"]
        for key in ("loss", "val_loss"):
            assert abs(float(a[key]) - float(b[key])) <= LOSS_TOL, (key, a, b)
        for key in ("accuracy", "val_accuracy", "val_mean_class_accuracy"):
            assert a[key] == b[key], (key, a, b)
    m1, m2 = mp["metrics"], ref["metrics"]
    assert m1["num_test"] == m2["num_test"] == 360  # the whole test split, each image once
    assert sum(map(sum, m1["confusion_matrix"])) == 360
    assert (m1["correct"], m1["confusion_matrix"]) == (m2["correct"], m2["confusion_matrix"])
    assert abs(m1["loss"] - m2["loss"]) <= LOSS_TOL
    assert [(r["index"], r["label"], r["prediction"]) for r in mp["predictions"]] == \
        [(r["index"], r["label"], r["prediction"]) for r in ref["predictions"]]
    assert 0.2 < m1["accuracy"] < 1  # it learned something (10 classes): equal results are not trivial


@pytest.mark.slow
def test_cluster_auto_in_a_slurm_job_step_trains_the_single_process_result(runs):
    """Two processes started as srun would (the same command line, SLURM_PROCID 0 and 1) form one
    cluster through --cluster auto and train what one process with two devices trains."""
    a0, a1, ref = runs["auto0"]["result"], runs["auto1"]["result"], runs["ref"]["result"]
    assert [(a["devices"], a["processes"], a["index"]) for a in (a0, a1)] == [(2, 2, 0), (2, 2, 1)]
    assert a0["jax"]["device"]["count"] == 2 and a0["jax"]["device"]["processes"] == 2
    assert "tf" not in a0 and "jax" not in a1  # only process 0 reads back its run directory
    (y0, s0), (y1, s1), (yr, sr) = a0["fed"], a1["fed"], ref["fed"]  # each fed its half of the batch
    assert len(y0) == len(y1) == 32 and y0 + y1 == yr
    np.testing.assert_allclose(s0 + s1, sr, rtol=1e-12)
    assert_same_run(a0["jax"], ref["jax"])
    assert a0["jax"]["files"] == ref["jax"]["files"]
    assert "process 1 of 2, writing nothing" in runs["auto1"]["log"]


@pytest.mark.slow
def test_unreachable_coordinator_under_cluster_auto_is_one_line(runs):
    r = runs["unreachable-auto"]
    assert r["rc"] == 2, tail(r["log"])
    lines = [x for x in r["log"].splitlines() if x.startswith(f"{PROG}: error:")]
    assert len(lines) == 1 and "process 1: could not reach the coordinator localhost:" in lines[0], \
        tail(r["log"])
    assert "Traceback" not in r["log"] and "Check failure" not in r["log"]
    assert not os.path.exists(runs["out"] / "unreachable-auto-run")


@pytest.fixture
def no_cluster(monkeypatch):
    """This process' environment without any cluster's variables (as outside SLURM and Open MPI)."""
    for k in [*CLUSTER_VARS, *(k for k in os.environ if k.startswith(("SLURM_", "OMPI_")))]:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


OMPI4 = {"OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.96.0.1,10.148.0.1,10.108.0.1:34911",
         "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}


@pytest.mark.parametrize("env", [
    slurm_job(1, 4096 * 977 + 5),
    {**slurm_job(0, 77), "SLURM_STEP_NODELIST": "node[001-015],gpu[1,3]", "SLURM_NTASKS": "30"},
    {**slurm_job(1, 77), "SLURM_STEP_NODELIST": "node[007,009-015]", "JAX_COORDINATOR_PORT": "1234"},
    {**slurm_job(1, 77), "SLURM_STEP_NODELIST": "node001,node002", "JAX_COORDINATOR_ADDRESS": "10.0.0.9:99"},
    OMPI4,
    {**OMPI4, "OMPI_MCA_orte_hnp_uri": "1314521088.0;tcp6://[fe80::b9b:ac5d:9cf0:b858,2620:10d::2]:43370"},
    {**OMPI4, **slurm_job(0, 77)},  # mpirun inside a SLURM allocation: Open MPI's, as JAX picks
], ids=["slurm-localhost", "slurm-range", "slurm-port", "slurm-address", "ompi", "ompi-ipv6", "ompi-in-slurm"])
def test_cluster_auto_reads_what_jax_reads(no_cluster, env):
    """tlres reads SLURM's and Open MPI's variables itself (to know the coordinator before joining,
    see tlres.run.distributed.detect): the same process count, id and coordinator as JAX's detection."""
    from tlres.run import distributed

    try:
        from jax._src import clusters
        detect_in_jax = clusters.ClusterEnv.auto_detect_unset_distributed_params
    except (ImportError, AttributeError) as e:
        pytest.skip(f"this JAX has no jax._src.clusters detection to compare with ({e})")
    for k, v in env.items():
        no_cluster.setenv(k, v)
    # jax.distributed.initialize() takes $JAX_COORDINATOR_ADDRESS first, then detects the rest
    coordinator, n, i, _ = detect_in_jax(os.environ.get("JAX_COORDINATOR_ADDRESS"), None, None, None,
                                         None, 300)
    assert distributed.detect()[:3] == (n, i, coordinator)


@pytest.mark.parametrize("env, flags, says", [
    ({}, [], "--cluster auto: no SLURM job step (srun) or Open MPI job (mpirun) found"),
    ({"SLURM_JOB_ID": "5", "SLURM_NTASKS": "2"}, [], "a SLURM job, but not a job step "
     "($SLURM_STEP_NODELIST, $SLURM_PROCID, $SLURM_LOCALID unset): start every process with srun"),
    ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"}, [], "Open MPI 5 sets none"),
    ({**slurm_job(0, 5), "SLURM_NTASKS": "two"}, [], "$SLURM_NTASKS='two' is not a number"),
    ({**slurm_job(2, 5)}, [], "$SLURM_PROCID=2 is out of range for $SLURM_NTASKS=2"),
    (slurm_job(0, 5), ["--num-processes", "2", "--coordinator", "h:1"],
     "takes the process count, id and coordinator from SLURM or Open MPI: drop --num-processes and "
     "--coordinator"),
])
def test_cluster_auto_outside_a_cluster_is_one_line(no_cluster, tmp_path, env, flags, says):
    from helpers import in_process_main

    for k, v in env.items():
        no_cluster.setenv(k, v)
    code, _, err = in_process_main(["--preset", "quick", "--arch", "tiny", "--out", str(tmp_path / "r"),
                                    "--data-parallel", "--cluster", "auto", *flags])
    assert code == 2 and err.count("\n") == 1 and says in err, err
    assert not os.path.exists(tmp_path / "r")
    assert "jax" not in sys.modules or not __import__("jax").distributed.is_initialized()


def test_cluster_auto_needs_data_parallel(no_cluster, tmp_path):
    from helpers import in_process_main

    for k, v in slurm_job(0, 5).items():
        no_cluster.setenv(k, v)
    code, _, err = in_process_main(["--preset", "quick", "--cluster", "auto", "--out", str(tmp_path / "r")])
    assert code == 2 and err.count("\n") == 1, err
    assert "--cluster auto found 2 processes, which train one model" in err and "add --data-parallel" in err


@pytest.mark.slow
def test_only_process_0_writes(runs):
    out = runs["out"]
    for pipe in ("jax", "tf"):
        assert not os.path.exists(out / f"process1-{pipe}")  # process 1's --out: never created
        assert runs["0"]["result"][pipe]["files"] == runs["ref"]["result"][pipe]["files"]
        assert "model.keras" in runs["0"]["result"][pipe]["files"]
    assert "writing nothing" in runs["1"]["log"] and "writing nothing" not in runs["0"]["log"]


@pytest.mark.slow
def test_unreachable_coordinator_is_one_line(runs):
    r = runs["unreachable"]
    assert r["rc"] == 2, tail(r["log"])
    lines = [x for x in r["log"].splitlines() if x.startswith(f"{PROG}: error:")]
    assert len(lines) == 1 and "could not reach the coordinator" in lines[0], tail(r["log"])
    assert "--coordinator-timeout 3" in lines[0]
    assert "Traceback" not in r["log"]
    assert not os.path.exists(runs["out"] / "unreachable-run")


@pytest.mark.parametrize("flags, says", [
    (["--num-processes", "2", "--process-id", "2", "--coordinator", "127.0.0.1:1"],
     "--process-id 2 is out of range for --num-processes 2: use 0..1"),
    (["--num-processes", "2", "--coordinator", "127.0.0.1:1"], "needs --process-id"),
    (["--num-processes", "2", "--process-id", "0"], "needs --coordinator HOST:PORT"),
    (["--num-processes", "2", "--process-id", "0", "--coordinator", "nowhere"], "expected HOST:PORT"),
    (["--process-id", "1"], "--process-id 1 is out of range: there is one process"),
])
def test_bad_process_flags_are_one_line(tmp_path, flags, says):
    from helpers import in_process_main

    code, _, err = in_process_main(["--preset", "quick", "--arch", "tiny", "--out", str(tmp_path / "r"),
                                    "--data-parallel", *flags])
    assert code == 2 and err.count("\n") == 1 and says in err, err
    assert not os.path.exists(tmp_path / "r")


def test_several_processes_need_data_parallel(tmp_path):
    from helpers import in_process_main

    code, _, err = in_process_main(["--preset", "quick", "--num-processes", "2", "--process-id", "0",
                                    "--coordinator", "127.0.0.1:1", "--out", str(tmp_path / "r")])
    assert code == 2 and "add --data-parallel" in err and err.count("\n") == 1, err


KILL_FLAGS = ["--preset", "quick", "--arch", "tiny", "--batch-size", "16", "--epochs", "3",
              "--augment", "--flip", "--pipeline", "jax", "--data-parallel", "--no-compile-cache"]


@pytest.mark.slow
def test_a_killed_process_ends_the_run_and_resume_finishes_it(tmp_path):
    from tlres.run import checkpoint

    data = write_npz(tmp_path / "toy.npz", n_train=256, n_test=40)  # 16 steps an epoch
    run = str(tmp_path / "run")

    def start(i, port, *args):
        log = open(tmp_path / f"p{i}-{port}.log", "w+")
        return log, subprocess.Popen(
            [sys.executable, "-m", "tlres.experiments.improved", *args, "--num-processes", "2",
             "--process-id", str(i), "--coordinator", f"127.0.0.1:{port}"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=ENV)

    def read(log):
        log.seek(0)
        return log.read()

    port = free_port()
    procs = [start(i, port, *KILL_FLAGS, "--data", data, "--out", run) for i in (0, 1)]
    try:
        deadline = time.time() + 300
        while time.time() < deadline and procs[0][1].poll() is None:
            meta = checkpoint.read_meta(run)
            if meta and meta["epochs_done"] >= 1:
                break
            time.sleep(0.05)
        assert procs[0][1].poll() is None, read(procs[0][0])
        procs[1][1].kill()  # SIGKILL process 1 in epoch 2
        killed = time.time()
        procs[1][1].wait()
        rc = procs[0][1].wait(timeout=LOST_BOUND_S + 30)
        took = time.time() - killed
        log0 = read(procs[0][0])
        assert rc not in (0, None) and took <= LOST_BOUND_S, (rc, took, tail(log0))
        lines = [x for x in log0.splitlines() if x.startswith(f"{PROG}: error:")]
        assert len(lines) == 1 and "lost process 1" in lines[0], tail(log0)
        assert "Check failure" not in log0  # exited itself, not aborted by JAX's runtime
        kept = checkpoint.read_meta(run)
        assert kept is not None and kept["epochs_done"] >= 1  # the last checkpoint is intact
        status = json.load(open(os.path.join(run, "status.json")))
        assert status["state"] == "failed" and "lost process 1" in status["error"]

        # another process count: refused in one line, nothing changed
        from helpers import in_process_main

        code, _, err = in_process_main(["--resume", run])
        assert code == 2 and "trained by 2 processes, this is 1 process" in err, err
        assert checkpoint.read_meta(run) == kept

        port = free_port()
        procs = [start(i, port, "--resume", run) for i in (0, 1)]
        for log, p in procs:
            assert p.wait(timeout=300) == 0, tail(read(log))
        status = json.load(open(os.path.join(run, "status.json")))
        assert status["state"] == "finished" and status["resumed_from_epoch"] == kept["epochs_done"]
        with open(os.path.join(run, "history.csv")) as f:
            assert len(f.read().strip().splitlines()) == 1 + 3
        assert json.load(open(os.path.join(run, "metrics.json")))["num_test"] == 40
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
