"""Several processes, one run: jax.distributed under keras.distribution.DataParallel.

Every process runs the same command with its own ``--process-id``; together they
train one model (docs/distributed.md). This module holds what is particular to that:

* `initialize(cfg)`: joins the cluster before anything is built (gloo collectives on
  CPU), from the flags, Keras' environment variables, or SLURM/Open MPI (``--cluster
  auto``, `detect`). It calls `jax.distributed.initialize`, which `keras.distribution.initialize`
  wraps, directly: only it takes the timeouts that bound a lost process (`HEARTBEAT_S`)
  and an unreachable coordinator (``--coordinator-timeout``). Keras' wrapper also agrees
  on a random seed across processes; tlres seeds every process with ``--seed``.
* `local_rows(batch)`: which rows of a global batch this process feeds; Keras' trainer
  assembles the global batch from the processes' shards with
  `jax.make_array_from_process_local_data`.
* `predict(forward, x, batch)`: inference over the whole (padded) test split, each
  process feeding its rows of every batch, every process receiving all logits.
* `together()`: a problem one process finds before training stops all of them.
* `lost(exc)`: a collective that failed because a peer died, as one line.

With one process (the default) nothing here does anything.
"""

import contextlib
import os
import re
import sys

import numpy as np

from tlres.errors import TlresError

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
    tests/test_distributed.py holds the two to the same values). tlres reads them itself, where
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
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TlresError(f"--coordinator {coordinator!r}: expected HOST:PORT, e.g. 10.0.0.1:1234")
    if not cfg.data_parallel:
        given = f"--cluster auto found {n} processes, which train" if cfg.cluster == "auto" else \
            f"--num-processes {n} trains"
        raise TlresError(f"{given} one model over every process' devices: add --data-parallel")


def initialize(cfg):
    """Join the cluster `cfg` names (no-op for one process); call before anything touches JAX."""
    if not wanted(cfg):
        return
    import jax

    if jax.distributed.is_initialized():
        return
    n, i, coordinator = settings(cfg)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    timeout = cfg.coordinator_timeout
    if i != 0:  # JAX aborts the process when the coordinator never answers:
        timeout = _reach(coordinator, i, timeout, cfg.cluster == "auto")  # find that out first, as one line
    try:  # on SLURM and Open MPI, JAX's detection still picks each process' local devices
        jax.distributed.initialize(coordinator, n, i, initialization_timeout=timeout,
                                   heartbeat_timeout_seconds=HEARTBEAT_S)
    except (RuntimeError, ValueError) as e:  # jaxlib's errors subclass these
        where = f"the coordinator {coordinator}" + (" (--cluster auto)" if cfg.cluster == "auto" else "")
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise TlresError(f"process {i}: could not join {where} within "
                         f"--coordinator-timeout {timeout} s ({first}); start process 0 first, check the "
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
    the model's jitted forward function (`tlres.model.forward`) runs once over the global
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


def _agree(failed):
    """Every process' `failed` flag, gathered (a collective: every process must call it)."""
    from jax.experimental import multihost_utils

    return [bool(v) for v in np.asarray(multihost_utils.process_allgather(np.int32(failed))).ravel()]


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
