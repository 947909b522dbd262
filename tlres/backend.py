"""Backend checks and process set-up: Keras on JAX, the compilation cache."""

import os
import sys

from tlres.errors import TlresError


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
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tlres", "jax")


def enable_compile_cache(path=None):
    """Share JAX's persistent compilation cache between processes.

    ResNet50's train step takes ~12 s to compile on a 2-core CPU; with the
    cache a second process with the same shapes starts in about half the time.
    """
    import jax

    path = path or default_cache_dir()
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path
