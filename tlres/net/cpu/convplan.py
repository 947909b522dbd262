"""`--conv auto` on a CPU: each distinct convolution's kernel chosen by timing both on the host.

For each distinct convolution (kernel, strides, padding, input shape, batch, dtype) `plan`
times XLA's kernel and the matmul form on each part of the work (`kernels.PARTS`: the forward
pass, the input gradient, the weight gradient) and keeps, per part, the smaller median; all
forms compute the same function (tests/net/test_conv.py), so the plan changes float rounding only.
The plan is cached in a JSON file beside the compile cache, one per host key (`host_key`: CPU,
cores, stack versions, XLA_FLAGS, `kernels.VERSION`); an unreadable or foreign file is ignored
with a one-line note. `TLRES_CONV_AUTO=matmul` (or `xla`) skips the timing (the test suite sets
it). The timing and applying the plan: `tlres.net.cpu.kernel_choice`; why a fixed rule does not
carry across CPUs: docs/speed.md#how---conv-auto-chooses-the-kernels-on-a-cpu.
"""

import hashlib
import json
import os
import statistics
import sys
import time

from tlres.core.errors import brief
from tlres.net import backend
from tlres.net.cpu import kernels

FORMAT = 2
KERNELS = kernels.FORMS
MIXED = "mixed"  # an entry's "kernel" when its parts differ
REPEATS = 3
ENV = "TLRES_CONV_AUTO"
STACK = ("jax", "jaxlib", "keras")


def env_rule(environ=None):
    """'matmul' or 'xla' when TLRES_CONV_AUTO forces one kernel for --conv auto, else None (measure)."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip().lower()
    return value if value in KERNELS else None


def stack_versions():
    from importlib import metadata

    out = {}
    for pkg in STACK:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def host_key(xla_flags=None):
    """What a timing depends on besides the shape: the CPU, its cores, the stack, XLA_FLAGS and
    the version of tlres' own kernels (`tlres.net.cpu.kernels.VERSION`)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
    return {"cpu": backend.cpu_name(), "vector_extensions": backend.cpu_features(),
            "cores": os.cpu_count(), "usable_cores": usable, "versions": stack_versions(),
            "xla_flags": " ".join(sorted(flags.split())), "kernels": kernels.VERSION}


def shape_key(shape):
    """One line per distinct convolution, e.g. 'b64 8x8x256 1x1->64 s1x1 same float32'.

    `shape`: dict with batch, input [h, w, c], kernel [kh, kw], filters, strides [sh, sw],
    padding, dtype (as `tlres.net.cpu.kernel_choice.conv_shape` gives).
    """
    h, w, c = shape["input"]
    kh, kw = shape["kernel"]
    sh, sw = shape["strides"]
    return (f"b{shape['batch']} {h}x{w}x{c} {kh}x{kw}->{shape['filters']} s{sh}x{sw} "
            f"{shape['padding']} {shape['dtype']}")


def cache_file(cache_dir, key):
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"conv_plan-{digest}.json")


def default_cache_dir():
    """The compile cache's folder for this process' XLA_FLAGS: the plan sits beside JAX's files."""
    return backend.cache_dir_for_flags(backend.default_cache_dir())


def read_cache(path, key, note):
    """{shape key: entry} from `path`, or {} when it is absent; unreadable or foreign: {} and a note."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            doc = json.load(f)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not a tlres convolution plan of this format")
        if doc.get("host") != key:
            raise ValueError("made for another host or stack")
        shapes = doc["shapes"]
        if not isinstance(shapes, dict) or not all(
                isinstance(e, dict) and parts_of(e) is not None for e in shapes.values()):
            raise ValueError("entries without a kernel for each part")
        return shapes
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        note(f"tlres: note: ignoring the convolution plan cache {path} ({brief(e, 120)}); "
             "timing again")
        return {}


def write_cache(path, key, shapes, note):
    """Write the plan atomically (a unique temporary file renamed over it); a failure is a note."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w") as f:
            json.dump({"format": FORMAT, "host": key, "shapes": shapes}, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        note(f"tlres: note: could not write the convolution plan cache {path} ({e}); "
             "it will be timed again next time")
        try:
            os.remove(tmp)
        except OSError:
            pass


def choose(times):
    """{kernel: [seconds, ...]} -> the kernel with the smallest median (ties: xla, XLA's own)."""
    medians = {k: statistics.median(times[k]) for k in KERNELS}
    return "matmul" if medians["matmul"] < medians["xla"] else "xla"


def parts_of(entry):
    """An entry's kernels as a tuple in `kernels.PARTS` order, or None if it has no valid ones."""
    parts = entry.get("parts")
    if not isinstance(parts, dict) or set(parts) != set(kernels.PARTS) \
            or not all(parts[p] in KERNELS for p in kernels.PARTS):
        return None
    return tuple(parts[p] for p in kernels.PARTS)


def entry(times):
    """The cache entry for one shape from {kernel: {part: [seconds, ...]}}: per part the kernel
    with the smaller median (`choose`), "kernel" the one kernel of all parts or `MIXED`, the
    medians and ranges in ms ("matmul_forward_ms", ...) and their sum per kernel ("matmul_ms")."""
    parts = {p: choose({k: times[k][p] for k in KERNELS}) for p in kernels.PARTS}
    kinds = set(parts.values())
    out = {"kernel": kinds.pop() if len(kinds) == 1 else MIXED, "parts": parts}
    for k in KERNELS:
        for p in kernels.PARTS:
            t = times[k][p]
            out[f"{k}_{p}_ms"] = round(statistics.median(t) * 1e3, 4)
            out[f"{k}_{p}_ms_range"] = [round(min(t) * 1e3, 4), round(max(t) * 1e3, 4)]
        out[f"{k}_ms"] = round(sum(out[f"{k}_{p}_ms"] for p in kernels.PARTS), 4)
    return out


def plan(shapes, time_fn, cache_dir=None, repeats=REPEATS, key=None, note=None):
    """The kernel for each distinct convolution shape, from the cache or timed now.

    `shapes`: dicts as `shape_key` takes; `time_fn(shape, kernel, repeats)` -> {part:
    `repeats` timings in seconds} of that kernel on each of `kernels.PARTS` (after compiling);
    `note(line)` prints (default: stderr). Returns {"kernels": {shape key: (kernel per part)},
    "shapes": {shape key: entry with kernel and median ms per kernel}, "source": "cache",
    "measured" or "measured+cache", "measured_now": [shape keys], "cache_file": path}.
    """
    note = note or (lambda line: print(line, file=sys.stderr, flush=True))
    key = host_key() if key is None else key
    folder = cache_dir or default_cache_dir()
    path = cache_file(folder, key)
    top = cache_dir or os.path.dirname(backend.default_cache_dir())
    try:
        trusted = backend.usable_cache(top, folder, "convolution plan cache", note)
    except OSError:  # cannot create it: timed, and the write's own note says why
        trusted = True
    cached = read_cache(path, key, note) if trusted else {}
    wanted = {}
    for s in shapes:
        wanted.setdefault(shape_key(s), s)
    todo = [k for k in wanted if k not in cached]
    if todo:
        note(f"tlres: timing {len(todo)} convolution shape{'s' if len(todo) != 1 else ''} on this CPU "
             + (f"(once; cached in {path})" if trusted else "(not cached)"))
        for k in todo:
            times = {kernel: time_fn(wanted[k], kernel, repeats) for kernel in KERNELS}
            cached[k] = {**entry(times), "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
                         "repeats": repeats}
        if trusted:
            write_cache(path, key, cached, note)
    source = "cache" if not todo else "measured" if len(todo) == len(wanted) else "measured+cache"
    return {"kernels": {k: parts_of(cached[k]) for k in wanted}, "shapes": {k: cached[k] for k in wanted},
            "source": source, "measured_now": todo, "cache_file": path}
