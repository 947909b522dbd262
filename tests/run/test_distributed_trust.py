"""Only a run's own processes join it: real processes on 127.0.0.1 (docs/distributed.md, Network and trust).

* Process 0's coordinator listens on the interface of the address it is given, read from the
  kernel's socket table (/proc/net/tcp and tcp6), not on every interface as JAX would by
  default; a wildcard only with --wildcard-bind, and without it one line, before any process
  starts.
* A process that joins with another run token, other data (the labels swapped, as a poisoner
  would) or other settings is refused: every process exits 2 with the same one line, and no
  process creates anything (process 0's --out and the joiner's never appear).
* Processes that show the same token, one through $TLRES_RUN_TOKEN and one through
  --run-token, train, and the token is in none of the files written.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ENV, PROG, ROOT, free_port, in_process_main, tail, write_npz

FLAGS = ["--preset", "quick", "--arch", "tiny", "--epochs", "1", "--batch-size", "32", "--image-size", "8",
         "--data-parallel", "--no-compile-cache", "--pipeline", "jax", "--coordinator-timeout", "60"]


def start(log, i, coordinator, *args, **env):
    """Process `i` of a 2-process run of the quick preset's tiny network, its output in `log`."""
    return subprocess.Popen([sys.executable, "-m", "tlres.experiments.improved", *FLAGS,
                             "--num-processes", "2", "--process-id", str(i), "--coordinator", coordinator,
                             *args], cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env={**ENV, **env})


def pair(tmp_path, flags0, flags1, env0=None, env1=None, timeout=300):
    """Run processes 0 and 1 with their own flags; [(exit status, output)] of each."""
    coordinator = f"127.0.0.1:{free_port()}"
    procs = [start(tmp_path / f"p{i}.log", i, coordinator, *flags, **(env or {}))
             for i, flags, env in ((0, flags0, env0), (1, flags1, env1))]
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(c, (tmp_path / f"p{i}.log").read_text()) for i, c in enumerate(codes)]


def errors(log):
    return [x for x in log.splitlines() if x.startswith(f"{PROG}: error:")]


@pytest.fixture
def data(tmp_path):
    """A toy data file, and a poisoned copy: the same images, labels 0 and 1 swapped in training."""
    good = write_npz(tmp_path / "toy.npz", n_train=128, n_test=32)
    with np.load(good) as f:
        arrays = dict(f)
    y = arrays["y_train"]
    arrays["y_train"] = np.where(y == 0, 1, np.where(y == 1, 0, y))
    assert (arrays["y_train"] != y).any()
    np.savez(tmp_path / "poisoned.npz", **arrays)
    return good, str(tmp_path / "poisoned.npz")


@pytest.mark.slow
@pytest.mark.parametrize("case, says", [
    ("token", "the run token of process 1 differs from process 0's"),
    ("data", "the data of process 1 differ from process 0's"),
    ("settings", "the settings of process 1 differ from process 0's"),
])
def test_a_joiner_that_is_not_the_runs_own_is_refused_by_every_process(tmp_path, data, case, says):
    good, poisoned = data
    flags0 = ["--data", good, "--out", str(tmp_path / "victim")]
    flags1 = {"token": ["--data", good], "data": ["--data", poisoned],
              "settings": ["--data", good, "--seed", "1"]}[case] + ["--out", str(tmp_path / "joiner")]
    env1 = {"TLRES_RUN_TOKEN": "another-secret"} if case == "token" else {"TLRES_RUN_TOKEN": "s3cret"}
    results = pair(tmp_path, flags0, flags1, {"TLRES_RUN_TOKEN": "s3cret"}, env1)
    for i, (code, log) in enumerate(results):
        assert code == 2, (i, tail(log))
        lines = errors(log)
        assert len(lines) == 1 and f"process {i} of 2: {says}" in lines[0], (i, tail(log))
        assert "not admitted: every process stops before training, nothing written" in lines[0]
        assert "Traceback" not in log and "epoch" not in log.lower(), tail(log)
    assert not os.path.exists(tmp_path / "victim") and not os.path.exists(tmp_path / "joiner")


@pytest.mark.slow
def test_the_same_token_trains_and_is_written_nowhere(tmp_path, data):
    good, _ = data
    token = "tok-" + os.urandom(8).hex()
    run = tmp_path / "run"
    results = pair(tmp_path, ["--data", good, "--out", str(run)],
                   ["--data", good, "--out", str(tmp_path / "p1"), "--run-token", token],
                   {"TLRES_RUN_TOKEN": token}, {})
    for code, log in results:
        assert code == 0, tail(log)
    assert (run / "model.keras").exists() and not (tmp_path / "p1").exists()
    for root, _, files in os.walk(run):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert token.encode() not in f.read(), name


def listening(port):
    """The local addresses of the sockets listening on TCP `port`, from the kernel's socket table:
    /proc/net/tcp (IPv4) and /proc/net/tcp6 (IPv6; an IPv4-mapped ::ffff:a.b.c.d as a.b.c.d)."""
    import ipaddress

    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as f:
            for row in f.read().splitlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                host, hex_port = local.split(":")
                if state != "0A" or int(hex_port, 16) != port:  # 0A: TCP_LISTEN
                    continue
                # the kernel prints each 32-bit word in host (little-endian) byte order
                raw = b"".join(bytes.fromhex(host[k:k + 8])[::-1] for k in range(0, width, 8))
                address = ipaddress.ip_address(raw)
                found.append(str(getattr(address, "ipv4_mapped", None) or address))
    return found


@pytest.mark.parametrize("flags, where", [
    ([], {"127.0.0.1"}),
    (["--coordinator-bind", "0.0.0.0:{port}", "--wildcard-bind"], {"0.0.0.0", "::"}),  # gRPC: [::], dual
], ids=["its-own-address", "wildcard-on-purpose"])
def test_the_coordinator_listens_where_it_is_told(tmp_path, flags, where):
    """Process 0, given 127.0.0.1, listens on 127.0.0.1 only (JAX's default would be [::], every
    interface); a wildcard, given on purpose, is a wildcard. Process 0 waits alone, then is killed."""
    port = free_port()
    p = start(tmp_path / "p0.log", 0, f"127.0.0.1:{port}", "--out", str(tmp_path / "run"),
              *(f.format(port=port) for f in flags))
    try:
        deadline, found = time.time() + 120, []
        while time.time() < deadline and p.poll() is None and not found:
            found = listening(port)
            time.sleep(0.2)
        assert found, tail((tmp_path / "p0.log").read_text())
        assert set(found) <= where, found
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert not os.path.exists(tmp_path / "run")  # it waited for process 1 before anything else


def test_the_socket_table_is_read_right():
    """`listening` against sockets whose addresses the test chose: an IPv4 one, and an IPv6 one."""
    import socket

    with socket.socket() as s4:
        s4.bind(("127.0.0.1", 0))
        s4.listen()
        assert listening(s4.getsockname()[1]) == ["127.0.0.1"]
    if socket.has_ipv6:
        with socket.socket(socket.AF_INET6) as s6:
            try:
                s6.bind(("::1", 0))
            except OSError:
                pytest.skip("no IPv6 loopback here")
            s6.listen()
            assert listening(s6.getsockname()[1]) == ["::1"]


@pytest.mark.parametrize("flags, env, says", [
    (["--coordinator", "0.0.0.0:1234"], {},
     "--coordinator 0.0.0.0:1234: process 0 would listen on every interface"),
    (["--coordinator", "127.0.0.1:1234", "--coordinator-bind", "[::]:1234"], {},
     "--coordinator-bind [::]:1234: process 0 would listen on every interface"),
    (["--coordinator", "127.0.0.1:1234"], {"JAX_COORDINATOR_BIND_ADDRESS": "*:1234"},
     "$JAX_COORDINATOR_BIND_ADDRESS *:1234: process 0 would listen on every interface"),
    (["--coordinator", "127.0.0.1:1234", "--coordinator-bind", "nowhere"], {},
     "--coordinator-bind 'nowhere': expected HOST:PORT"),
    (["--coordinator", "127.0.0.1:1234", "--run-token", ""], {}, "--run-token must not be empty"),
])
def test_a_wildcard_bind_needs_asking_for(tmp_path, monkeypatch, flags, env, says):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, _, err = in_process_main(["--preset", "quick", "--arch", "tiny", "--out", str(tmp_path / "r"),
                                    "--data-parallel", "--num-processes", "2", "--process-id", "0", *flags])
    assert code == 2 and err.count("\n") == 1 and says in err, err
    if "every interface" in says:
        assert "--wildcard-bind" in err
    assert not os.path.exists(tmp_path / "r")
    assert "jax" not in sys.modules or not __import__("jax").distributed.is_initialized()


def foreign_address():
    """A documentation address (RFC 5737) that this host cannot bind, as the socket layer says."""
    import socket

    for address in ("203.0.113.7", "198.51.100.7", "192.0.2.254"):
        with socket.socket() as s:
            try:
                s.bind((address, 0))
            except OSError:
                return address
    pytest.skip("every documentation address is one of this host's")


def test_an_address_not_of_this_host_is_one_line(tmp_path):
    """Process 0 cannot listen on an address that is not its host's, and says so before JAX tries
    (JAX's own error names neither the address nor the cause)."""
    where = f"{foreign_address()}:{free_port()}"
    code, _, err = in_process_main(["--preset", "quick", "--arch", "tiny", "--out", str(tmp_path / "r"),
                                    "--data-parallel", "--num-processes", "2", "--process-id", "0",
                                    "--coordinator", where])
    assert code == 2 and err.count("\n") == 1, err
    assert f"process 0 cannot listen at {where}" in err and "address of this host" in err, err
    assert not os.path.exists(tmp_path / "r")
    assert not __import__("jax").distributed.is_initialized()


def test_the_data_fingerprint_sees_a_label_swap():
    """Two copies of one dataset agree; swapping two labels, or one pixel, changes the fingerprint."""
    from tlres.data.dataset import Dataset
    from tlres.run.distributed import fingerprint

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (20, 4, 4, 3), dtype=np.uint8)
    y = np.arange(20) % 4

    def ds(x, y):
        return Dataset("t", x, y, x[:5].copy(), y[:5].copy(), ("a", "b", "c", "d"))

    base = fingerprint(ds(x, y))
    assert fingerprint(ds(x.copy(), y.copy())) == base
    swapped = y.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert fingerprint(ds(x, swapped)) != base
    x2 = x.copy()
    x2[3, 0, 0, 0] ^= 1
    assert fingerprint(ds(x2, y)) != base


def fake_peer(monkeypatch, answer):
    """This process as process 0 of 2, its exchanges answered by `answer(round, row)` as process 1's."""
    from tlres.run import distributed

    rounds = []

    def gather(row):
        rounds.append(row)
        return [row, answer(len(rounds), row)]

    monkeypatch.setattr(distributed, "processes", lambda: 2)
    monkeypatch.setattr(distributed, "index", lambda: 0)
    monkeypatch.setattr(distributed, "_gather", gather)
    monkeypatch.setenv("TLRES_RUN_TOKEN", "s3cret")
    return rounds


def tiny_dataset():
    from tlres.data.dataset import Dataset

    x = np.zeros((8, 4, 4, 3), np.uint8)
    return Dataset("t", x, np.arange(8) % 2, x[:2], np.arange(2), ("a", "b"))


def test_a_joiner_that_echoes_process_0_is_refused(monkeypatch):
    """Without the token, a joiner could send back what process 0 sent (a collective gives every
    row to every process): process 0's proof names process 0, so the echo is refused."""
    from tlres.run import distributed
    from tlres.core.config import QUICK
    from tlres.core.errors import TlresError

    fake_peer(monkeypatch, lambda k, row: row)
    with pytest.raises(TlresError, match="the run token of process 1 differs from process 0's"):
        distributed.admit(QUICK, tiny_dataset())


def test_a_joiner_with_the_token_is_admitted(monkeypatch):
    """Process 1 computes its proof as docs/distributed.md says, HMAC-SHA256 keyed by the token over
    the nonces, its process id (4 bytes, big-endian) and its two digests: admitted."""
    import hashlib
    import hmac

    from tlres.run import distributed
    from tlres.core.config import QUICK

    def answer(k, row):
        if k == 1:
            return b"\7" * 16
        nonces = rounds[0] + b"\7" * 16
        return row[:64] + hmac.new(b"s3cret", nonces + (1).to_bytes(4, "big") + row[:64],
                                   hashlib.sha256).digest()

    rounds = fake_peer(monkeypatch, answer)
    distributed.admit(QUICK, tiny_dataset())
    assert [len(r) for r in rounds] == [16, 96]  # a nonce; two sha256 digests and an HMAC-SHA256
