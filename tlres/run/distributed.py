"""Several processes, one run: jax.distributed under keras.distribution.DataParallel.

Every process runs the same command with its own --process-id (docs/distributed.md):
`initialize` joins the cluster before anything is built (from the flags, Keras' variables,
or SLURM/Open MPI: `detect`), bounding a lost process and an unreachable coordinator, and
listening on its address's interface only (`bind_address`); `admit` stops every process
when one lacks the run's token, settings or data; `local_rows` and `predict` say which rows
of a batch each process feeds; `together` makes a problem one process finds before training
stop them all; `lost` turns a collective that failed on a dead peer into one line.
With one process (the default) nothing here does anything.
"""

import contextlib
import hashlib
import hmac
import inspect
import json
import os
import re
import sys

import numpy as np

from tlres.core.config import COMPUTES, halves
from tlres.core.errors import TlresError, brief

TOKEN_ENV = "TLRES_RUN_TOKEN"  # the run token, where `ps` does not show it (docs/distributed.md)
HEARTBEAT_S = 30  # a process silent this long (hung, its host down) is declared lost
ENV = {"num_processes": "KERAS_DISTRIBUTION_NUM_PROCESSES", "process_id": "KERAS_DISTRIBUTION_PROCESS_ID",
       "coordinator": "KERAS_DISTRIBUTION_JOB_ADDRESSES"}


SLURM = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
OMPI_URI = "OMPI_MCA_orte_hnp_uri"  # set by Open MPI's mpirun before version 5 (ORTE) only
PORTS = 2 ** 12  # JAX's coordinator port: 61440 + job id mod 4096, unless $JAX_COORDINATOR_PORT


class PeerLost(TlresError):
    """Another process of the run died or became unreachable; this one stops too."""

    exit_code = 3


def detect():
    """(num_processes, process_id, coordinator, launcher) of the SLURM job step or Open MPI job
    this process runs in, read as jax.distributed's own detection reads them
    (jax/_src/clusters/ompi_cluster.py and slurm_cluster.py, Open MPI first as there;
    tests/run/test_distributed.py holds the two to the same values). tlres reads them itself, where
    ``jax.distributed.initialize()`` would, to know the coordinator before joining: JAX aborts a
    process whose coordinator never answers. A TlresError outside such a job."""
    env = os.environ

    def number(name):
        try:
            return int(env[name])
        except ValueError:
            raise TlresError(f"--cluster auto: ${name}={env[name]!r} is not a number") from None

    port = env.get("JAX_COORDINATOR_PORT")
    if OMPI_URI in env:  # e.g. 1531576320.0;tcp://10.96.0.1,10.148.0.1:34911
        uri = env[OMPI_URI]
        host = re.search(r"tcp://(.+?)[,:]|tcp6://\[(.+?)[,\]]", uri)
        if host is None or not uri.split(".", 1)[0].isdigit():
            raise TlresError(f"--cluster auto: ${OMPI_URI}={uri!r}: no job id and address in it")
        port = port or str(int(uri.split(".", 1)[0]) // PORTS % PORTS + 65536 - PORTS)
        names = ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")
        launcher, where = "Open MPI", next(h for h in host.groups() if h is not None)
    elif all(v in env for v in SLURM):
        port = port or str(number("SLURM_JOB_ID") % PORTS + 65536 - PORTS)
        nodes = env["SLURM_STEP_NODELIST"]  # the first node: 'node001,x', 'node[001-015],x' -> node001
        first = re.match(r"([^,\[]*)(?:\[([^,\-\]]*))?", nodes)
        names = ("SLURM_NTASKS", "SLURM_PROCID")
        launcher, where = "SLURM", first.group(1) + (first.group(2) or "")
    elif "SLURM_JOB_ID" in env:
        missing = ", ".join("$" + v for v in SLURM if v not in env)
        raise TlresError(f"--cluster auto: a SLURM job, but not a job step ({missing} unset): start "
                         "every process with srun")
    elif "OMPI_COMM_WORLD_SIZE" in env:
        raise TlresError(f"--cluster auto: an Open MPI job without ${OMPI_URI} (Open MPI 5 sets none, "
                         "and JAX's detection needs it): give --num-processes, --process-id and "
                         "--coordinator instead")
    else:
        raise TlresError("--cluster auto: no SLURM job step (srun) or Open MPI job (mpirun) found in "
                         "the environment; elsewhere give --num-processes, --process-id and --coordinator")
    n, i = number(names[0]), number(names[1])
    if not 0 <= i < n:
        raise TlresError(f"--cluster auto: ${names[1]}={i} is out of range for ${names[0]}={n}")
    return n, i, env.get("JAX_COORDINATOR_ADDRESS") or f"{where}:{port}", launcher


def settings(cfg):
    """(num_processes, process_id, coordinator) from the flags, else Keras' environment variables,
    or with ``--cluster auto`` from SLURM or Open MPI (`detect`)."""
    if cfg.cluster == "auto":
        return detect()[:3]
    def env(name, kind):
        text = os.environ.get(ENV[name])
        if text is None or text == "":
            return None
        try:
            return kind(text)
        except ValueError:
            raise TlresError(f"{ENV[name]}={text!r} is not a number") from None

    n = cfg.num_processes if cfg.num_processes is not None else env("num_processes", int)
    i = cfg.process_id if cfg.process_id is not None else env("process_id", int)
    coordinator = cfg.coordinator or env("coordinator", str)
    if coordinator and "," in coordinator:  # Keras' form: every job's address, process 0's first
        coordinator = coordinator.split(",")[0]
    return n, i, coordinator


def wanted(cfg):
    """True when `cfg` asks for more than one process."""
    n, _, _ = settings(cfg)
    return (n or 1) > 1


def check(cfg):
    """The flags' own consistency, before any connection is tried (one line, exit 2)."""
    if cfg.coordinator_timeout <= 0:
        raise TlresError(f"--coordinator-timeout must be positive, got {cfg.coordinator_timeout}")
    if cfg.cluster == "auto":
        given = [f"--{f.replace('_', '-')}" for f in ("num_processes", "process_id", "coordinator")
                 if getattr(cfg, f) is not None]
        if given:
            raise TlresError(f"--cluster auto takes the process count, id and coordinator from SLURM or "
                             f"Open MPI: drop {' and '.join(given)}")
    n, i, coordinator = settings(cfg)
    if n is not None and n < 1:
        raise TlresError(f"--num-processes must be positive, got {n}")
    if (n or 1) == 1:
        if i not in (None, 0):
            raise TlresError(f"--process-id {i} is out of range: there is one process (--num-processes 1)")
        return
    if i is None:
        raise TlresError(f"--num-processes {n} needs --process-id (0..{n - 1}) on every process")
    if not 0 <= i < n:
        raise TlresError(f"--process-id {i} is out of range for --num-processes {n}: use 0..{n - 1}")
    if not coordinator:
        raise TlresError(f"--num-processes {n} needs --coordinator HOST:PORT (process 0's host and a free "
                         "port), the same on every process")
    _split("--coordinator", coordinator)
    bind_address(cfg, coordinator)
    if cfg.run_token == "":
        raise TlresError("--run-token is empty: give every process the same long random secret "
                         f"(better in ${TOKEN_ENV}, which `ps` does not show), or none")
    if not cfg.data_parallel:
        given = f"--cluster auto found {n} processes, which train" if cfg.cluster == "auto" else \
            f"--num-processes {n} trains"
        raise TlresError(f"{given} one model over every process' devices: add --data-parallel")


def _split(flag, address):
    """(host, port) of a HOST:PORT flag value ([v6]:PORT too), or one line saying what is wrong."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TlresError(f"{flag} {address!r}: expected HOST:PORT, e.g. 10.0.0.1:1234")
    return host.strip("[]"), int(port)


def _wildcard(host):
    """Whether `host` (an address or name, no port) means every interface."""
    import ipaddress

    if host in ("", "*"):
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def bind_address(cfg, coordinator):
    """HOST:PORT where process 0's coordinator listens: --coordinator-bind, else
    $JAX_COORDINATOR_BIND_ADDRESS, else the coordinator's own address (its interface only; JAX
    itself would listen on every interface). A wildcard only with --wildcard-bind: one line."""
    given = cfg.coordinator_bind or os.environ.get("JAX_COORDINATOR_BIND_ADDRESS") or None
    flag = "--coordinator-bind" if cfg.coordinator_bind else \
        "$JAX_COORDINATOR_BIND_ADDRESS" if given else "--coordinator"
    bind = given or coordinator
    host, port = _split(flag, bind)
    if _wildcard(host) and not cfg.wildcard_bind:
        raise TlresError(f"{flag} {bind}: process 0 would listen on every interface, where anyone who "
                         f"reaches port {port} can try to join the run; give an address of its host on "
                         f"the processes' network (e.g. --coordinator-bind 10.0.0.1:{port}), or add "
                         "--wildcard-bind to listen everywhere on purpose")
    return bind


def _can_listen(bind, wildcard_ok):
    """Check, before JAX tries, that process 0 can listen at `bind`: one line where it cannot
    (JAX's own error names neither the address nor the cause)."""
    import socket

    host, port = _split("--coordinator-bind", bind)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise TlresError(f"process 0 cannot listen at {bind}: {host} does not resolve "
                         f"({e.strerror or e}); give --coordinator-bind with an address of this host") from None
    problem = None
    for family, kind, proto, _, where in found:
        if _wildcard(where[0]) and not wildcard_ok:
            raise TlresError(f"process 0 cannot listen at {bind}: {host} means every interface "
                             f"({where[0]}); give an address of this host, or add --wildcard-bind")
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(where)
                return
            except OSError as e:
                problem = e.strerror or str(e)
    raise TlresError(f"process 0 cannot listen at {bind} ({problem}): give --coordinator-bind with an "
                     "address of this host and a free port (or free that port)")


def initialize(cfg):
    """Join the cluster `cfg` names (no-op for one process); call before anything touches JAX."""
    if not wanted(cfg):
        return
    import jax

    if jax.distributed.is_initialized():
        return
    n, i, coordinator = settings(cfg)
    timeout, bind = cfg.coordinator_timeout, bind_address(cfg, coordinator)
    if "coordinator_bind_address" not in inspect.signature(jax.distributed.initialize).parameters:
        raise TlresError(f"jax {jax.__version__} cannot be told where its coordinator listens (it "
                         "would listen on every interface): upgrade jax to run several processes")
    if i == 0:
        _can_listen(bind, cfg.wildcard_bind)
    else:  # JAX aborts the process when the coordinator never answers:
        timeout = _reach(coordinator, i, timeout, cfg.cluster == "auto")  # find that out first, as one line
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    try:  # on SLURM and Open MPI, JAX's detection still picks each process' local devices
        jax.distributed.initialize(coordinator, n, i, initialization_timeout=timeout,
                                   heartbeat_timeout_seconds=HEARTBEAT_S, coordinator_bind_address=bind)
    except (RuntimeError, ValueError) as e:  # jaxlib's errors subclass these
        where = f"the coordinator {coordinator}" + (" (--cluster auto)" if cfg.cluster == "auto" else "")
        raise TlresError(f"process {i}: could not join {where} within "
                         f"--coordinator-timeout {timeout} s ({brief(e)}); start process 0 first, check the "
                         "address and port, or raise --coordinator-timeout") from e
    if not cfg.data_parallel:
        raise TlresError(f"{jax.process_count()} processes train one model over every process' "
                         "devices: add --data-parallel")


def _reach(coordinator, i, timeout, auto=False):
    """Wait until something listens at `coordinator` (process 0's service); the seconds left."""
    import socket
    import time

    host, _, port = coordinator.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return max(1, int(deadline - time.monotonic()))
        except OSError as e:
            if time.monotonic() >= deadline:
                fix = ("check that process 0 of the job started there and that the port is free" if auto
                       else "start process 0 with the same --coordinator, check the address and port")
                raise TlresError(f"process {i}: could not reach the coordinator {coordinator} within "
                                 f"--coordinator-timeout {timeout} s ({e.strerror or e}); {fix}, or raise "
                                 "--coordinator-timeout") from None
            time.sleep(0.5)


def processes():
    """How many processes train this run (1 unless `initialize` joined a cluster)."""
    if "jax" not in sys.modules:
        return 1
    import jax

    return jax.process_count()


def index():
    if "jax" not in sys.modules:
        return 0
    import jax

    return jax.process_index()


def is_writer():
    """Process 0 writes the run directory; the others write nothing."""
    return index() == 0


def local_rows(batch_size):
    """The slice of every global batch of `batch_size` rows that this process feeds.

    Read from the distribution's data layout (the global batch is sharded over the devices
    in mesh order; this process' devices hold one contiguous block), so each process' shard
    is exactly the rows the single-process batch has there.
    """
    import keras

    dist = keras.distribution.distribution()
    if processes() == 1 or dist is None:
        return slice(0, batch_size)
    sharding = dist.get_data_layout((batch_size,)).backend_layout
    starts = sorted({(s[0].start or 0, s[0].stop or batch_size)
                     for s in sharding.addressable_devices_indices_map((batch_size,)).values()})
    lo, hi = starts[0][0], starts[-1][1]
    if sum(b - a for a, b in starts) != hi - lo:
        raise TlresError("this process' devices do not hold one contiguous block of the batch")
    return slice(lo, hi)


def predict(forward, x, batch_size):
    """Logits of every row of `x` (a multiple of `batch_size` rows), on every process.

    Each batch is the single-process batch: every process feeds its `local_rows` of it,
    the model's jitted forward function (`tlres.net.model.forward`) runs once over the global
    batch, and the logits are gathered to all.
    """
    import jax
    import keras
    from jax.experimental import multihost_utils

    rows = local_rows(batch_size)
    sharding = keras.distribution.distribution().get_data_layout((batch_size, *x.shape[1:])).backend_layout
    out = []
    for b in range(0, len(x), batch_size):
        xb = jax.make_array_from_process_local_data(sharding, x[b:b + batch_size][rows])
        out.append(np.asarray(multihost_utils.process_allgather(forward(xb), tiled=True)))
    return np.concatenate(out)


def _gather(row):
    """Every process' `row` (bytes, the same length on each), in process order (a collective)."""
    from jax.experimental import multihost_utils

    mine = np.frombuffer(row, np.uint8)
    return [bytes(r) for r in np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, len(row))]


def _agree(failed):
    """Every process' `failed` flag, gathered (a collective: every process must call it)."""
    return [r != b"\0" for r in _gather(b"\1" if failed else b"\0")]


def fingerprint(ds):
    """sha256 of what a dataset holds (its four arrays, their shapes and types, its class names),
    wherever it was read from: the processes of a run must all train on these."""
    h = hashlib.sha256(json.dumps(list(ds.class_names)).encode())
    for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.digest()


def settings_digest(cfg):
    """sha256 of what a run computes (config.COMPUTES), where it reads its data aside (the data
    are compared by `fingerprint`, so the path may differ between hosts)."""
    computes = {k: v for k, v in halves(cfg)[COMPUTES].items() if k not in ("data", "data_dir")}
    return hashlib.sha256(json.dumps(computes, sort_keys=True, default=str).encode()).digest()


def _proof(key, nonces, j, digests):
    """Process `j`'s HMAC over this exchange: its own, so that a joiner cannot echo another's."""
    return hmac.new(key, nonces + j.to_bytes(4, "big") + digests, hashlib.sha256).digest()


def admit(cfg, ds):
    """Every process shows the run's token and agrees on the settings and the data, before any
    gradient counts; else every process stops with the same line. JAX has no hook to refuse a
    process that joins, so this is the first exchange after joining: fresh nonces, then each
    process' settings and data digests and its HMAC (`_proof`), keyed by the token."""
    if processes() == 1:
        return
    mine = settings_digest(cfg) + fingerprint(ds)
    secret = cfg.run_token or os.environ.get(TOKEN_ENV) or None
    key = secret.encode() if secret else b"derived:" + mine  # derived: it only says they agree
    nonces = b"".join(_gather(os.urandom(16)))  # a recorded exchange cannot be replayed
    rows = _gather(mine + _proof(key, nonces, index(), mine))

    def forged(j):
        return not hmac.compare_digest(rows[j][64:], _proof(key, nonces, j, rows[j][:64]))

    for what, part, fix in (
            ("settings", slice(0, 32), "what the run computes: give every process the same flags"),
            ("data", slice(32, 64), "give every process the same --data"),
            ("run token", None, f"give every process the same ${TOKEN_ENV} or --run-token, "
             "or none to all")):
        if part is not None:
            odd = [j for j, r in enumerate(rows) if r[part] != rows[0][part]]
        else:  # checked with this process' key: where process 0's fails, this one is the odd one
            odd = [index()] if forged(0) else [j for j in range(len(rows)) if forged(j)]
        if odd:
            who = f"process{'es' if len(odd) > 1 else ''} {', '.join(map(str, odd))}"
            verb = "differs" if what == "run token" else "differ"
            raise TlresError(f"process {index()} of {len(rows)}: the {what} of {who} {verb} from process "
                             f"0's ({fix}); not admitted: every process stops before training, nothing "
                             "written")


@contextlib.contextmanager
def together():
    """Run a set-up block on every process; when one fails, all stop (no one waits in a collective
    for a process that has left). The failing process raises its own error; the others one line."""
    if processes() == 1:
        yield
        return
    try:
        yield
    except BaseException:
        _agree(True)
        raise
    flags = _agree(False)
    if any(flags):
        names = ", ".join(str(i) for i, f in enumerate(flags) if f)
        raise TlresError(f"process {names} stopped before training (its own error says why); "
                         "this one stops too")


GLOO_LOST = ("Connection reset", "Connection closed", "Broken pipe", "Socket closed", "Read error",
             "Write error", "Timed out", "heartbeat", "unhealthy")


def lost(exc):
    """A `PeerLost` for an exception from a collective whose peer went away, else None."""
    if processes() == 1 or isinstance(exc, TlresError) or not isinstance(exc, Exception):
        return None
    text = str(exc)
    if "Gloo" not in text and not any(m in text for m in GLOO_LOST):
        return None
    n, me = processes(), index()
    who = f"process {1 - me}" if n == 2 else "another process"
    detail = " ".join(text.split())[:160]
    return PeerLost(f"process {me} of {n}: lost {who} (it died or became unreachable: {detail}); "
                    "stopping")


def finish(code):
    """Several processes and a failure: exit now with `code`, skipping JAX's shutdown barrier (at
    interpreter exit it would wait for the lost process, then abort). One process: return."""
    if code and processes() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
