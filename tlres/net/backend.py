"""Backend checks and process set-up: Keras on JAX, the compilation cache."""

import os
import stat
import sys

from tlres.core.errors import TlresError


def require_jax():
    """Fail clearly unless Keras runs (or will run) on the JAX backend."""
    chosen = os.environ.get("KERAS_BACKEND", "jax")
    if chosen != "jax":
        raise TlresError(
            f"tlres runs Keras on the JAX backend, but KERAS_BACKEND={chosen!r}; "
            "unset KERAS_BACKEND or set KERAS_BACKEND=jax"
        )
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != "jax":
            raise TlresError(
                f"Keras was imported with the {keras.backend.backend()!r} backend before tlres; "
                "set KERAS_BACKEND=jax before importing keras"
            )


def cpu_name():
    """The host CPU's model name (e.g. 'AMD EPYC'), for naming where a figure was measured."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


VECTOR_EXTENSIONS = (
    # x86-64, in /proc/cpuinfo's spelling: what XLA's, oneDNN's and PyTorch's CPU kernels dispatch on
    "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",
    # Arm (the "Features" line)
    "asimd", "asimdhp", "sve", "sve2", "bf16", "i8mm", "sme",
)


def cpu_features(path="/proc/cpuinfo"):
    """The host CPU's vector extensions, e.g. ['avx', 'avx2', 'fma', 'avx512f', ...], in
    `VECTOR_EXTENSIONS` order; None where they cannot be read (no /proc/cpuinfo: not Linux).

    Speed figures depend on them (an AVX2 and an AVX-512 host of the same name differ by
    more than 2x in places), so every figure tlres measures names them.
    """
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    have = set(value.split())
                    return [x for x in VECTOR_EXTENSIONS if x in have]
    except OSError:
        return None
    return None


def host_description():
    """E.g. 'AMD EPYC, 2 cores, avx avx2 fma avx512f ...': the host a speed figure belongs to."""
    feats = cpu_features()
    ext = "vector extensions unknown" if feats is None else (" ".join(feats) or "no AVX")
    return f"{cpu_name()}, {os.cpu_count()} cores, {ext}"


def default_cache_dir():
    """The compile cache's folder: <XDG_CACHE_HOME or ~/.cache>/tlres/jax (tlres' own part: tlres/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tlres", "jax")


def cache_dir_for_flags(path, xla_flags=None):
    """`path`, or a subfolder of it named for this process' XLA_FLAGS when any are set.

    JAX keeps XLA's per-fusion GPU autotuning results inside the compilation cache
    folder (`jax_persistent_cache_enable_xla_caches`), and those are keyed by the
    fusion, not by XLA_FLAGS. On an H200, two quick-preset runs with
    XLA_FLAGS=--xla_gpu_deterministic_ops=true that shared a cache with two earlier
    runs without the flag disagreed in 32 of 360 test predictions, while processes
    with the flag and no shared cache agreed bit for bit. That cache is the likely
    cause (not isolated further). One folder per flag setting keeps executables and
    algorithm choices made under one setting away from every other.
    """
    import hashlib

    flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
    flags = " ".join(sorted(flags.split()))
    if not flags:
        return path
    return os.path.join(path, "xla_flags-" + hashlib.sha256(flags.encode()).hexdigest()[:12])


def private_dir(top, folder):
    """Create `folder` and each missing folder above it 0700; return why it must not be used, or None.

    A cache is code or plans tlres runs by: every folder from `top` (where tlres' own part
    begins) down to `folder` must be the user's and writable by no group and no other user.
    OSError when a folder cannot be created.
    """
    top, folder = os.path.abspath(top), os.path.abspath(folder)
    chain = [folder]
    while chain[-1] != top and os.path.dirname(chain[-1]) != chain[-1]:
        chain.append(os.path.dirname(chain[-1]))
    while not os.path.exists(os.path.dirname(chain[-1])):  # e.g. ~/.cache itself is missing
        chain.append(os.path.dirname(chain[-1]))
    for f in reversed(chain):
        try:
            os.mkdir(f, 0o700)
        except FileExistsError:
            pass
    for f in reversed(chain[:chain.index(top) + 1] if top in chain else chain):
        st = os.stat(f)
        if not stat.S_ISDIR(st.st_mode):
            return f"{f} is not a folder"
        if st.st_uid != os.getuid():
            return f"{f} belongs to another user (uid {st.st_uid})"
        if st.st_mode & 0o022:
            return f"{f} is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


WARNED = set()  # (what, folder): each refused cache is said once per process


def usable_cache(top, folder, what, note=None):
    """Whether `folder` (see `private_dir`) may hold `what`; if not, one warning line, once."""
    reason = private_dir(top, folder)
    if reason and (what, folder) not in WARNED:
        WARNED.add((what, folder))
        line = f"tlres: warning: not using the {what} in {folder}: {reason}; running without it"
        (note or (lambda text: print(text, file=sys.stderr, flush=True)))(line)
    return reason is None


def enable_compile_cache(path=None):
    """Share JAX's persistent compilation cache between processes (one folder per XLA_FLAGS setting).

    ResNet50's train step takes ~12 s to compile on a 2-core CPU; with the
    cache a second process with the same shapes starts in about half the time. Only a
    folder that is the user's alone (`usable_cache`): else None, and no cache.
    """
    import jax

    top = path or os.path.dirname(default_cache_dir())
    path = cache_dir_for_flags(path or default_cache_dir())
    try:
        if not usable_cache(top, path, "compilation cache"):
            return None
    except OSError as e:
        print(f"tlres: warning: not using the compilation cache in {path}: cannot create it "
              f"({e.strerror}); running without it", file=sys.stderr, flush=True)
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path
