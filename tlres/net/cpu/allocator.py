"""The process' memory allocator on a CPU host: a faster one for the command line, chosen at start.

XLA:CPU allocates each training step's large temporary buffer afresh and frees it at the step's
end; glibc's malloc then maps and zeroes it again every step, one page fault at a time. The
`tlres` command therefore starts itself again (`os.execve`, before anything heavy is imported,
as PyTorch's CPU launcher does) with tcmalloc preloaded, only from the fixed `LIB_DIRS` or the
file named in `TLRES_TCMALLOC` (never a search the environment steers), or else with glibc's
tunables set to keep what it frees (`GLIBC_KEEP`). `TLRES_ALLOCATOR=system|tcmalloc|glibc-keep`
overrides the choice. Only where buffers live changes, never what a run computes; `describe`
records it. Measurements: docs/speed.md#the-allocator.
"""

import os
import platform
import sys

ENV = "TLRES_ALLOCATOR"
USER_TCMALLOC = "TLRES_TCMALLOC"  # the tcmalloc file the user chose: preloaded instead of the system's
CHOICES = ("auto", "system", "tcmalloc", "glibc-keep")
STARTED = "TLRES_ALLOCATOR_STARTED"  # set on the restarted process: what it was started with
TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
            "/usr/local/lib")
# glibc's tunables for "keep what is freed": no mmap'd blocks, one arena, no trimming (1 TiB)
GLIBC_KEEP = ("glibc.malloc.mmap_max=0", "glibc.malloc.arena_max=1",
              "glibc.malloc.trim_threshold=1099511627776")


def find_tcmalloc(env=None):
    """(the tcmalloc library to preload or None, a one-line note or None): the file named in
    TLRES_TCMALLOC when it is a readable regular file, else the first of `TCMALLOC_NAMES` in the
    fixed `LIB_DIRS`. Nothing else is searched: no library the environment chose is loaded."""
    env = os.environ if env is None else env
    chosen = env.get(USER_TCMALLOC)
    if chosen:
        path = os.path.abspath(chosen)
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            return None, f"{USER_TCMALLOC}={chosen!r} is not a readable file; not preloading it"
        return path, None
    for name in TCMALLOC_NAMES:
        for folder in LIB_DIRS:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path, None
    return None, None


def glibc_version():
    """(major, minor) of the C library if it is glibc, else None."""
    name, version = platform.libc_ver()
    if name != "glibc" or not version:
        return None
    try:
        return tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return None


def glibc_keep_possible():
    """Whether glibc's malloc tunables (GLIBC_TUNABLES, glibc 2.26 or later) can be set."""
    version = glibc_version()
    return version is not None and version >= (2, 26)


def on_gpu_host():
    """Whether JAX will likely compute on an accelerator here (then host allocations matter little
    and the process is left as started)."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms and platforms.split(",")[0].strip() not in ("cpu", ""):
        return True
    return not platforms and (os.path.exists("/dev/nvidia0") or os.path.exists("/dev/kfd"))


LOOK = object()  # plan(): find out on this host


def plan(env=None, tcmalloc=LOOK, glibc_keep=LOOK, gpu=LOOK):
    """(what to start the process again with: 'tcmalloc' | 'glibc-keep' | None, a note or None),
    from the environment and the host (`tcmalloc`: its path or None; `glibc_keep`, `gpu`: bools;
    each looked up here unless given, as the tests give them)."""
    env = os.environ if env is None else env
    if env.get(STARTED) is not None or sys.platform != "linux":
        return None, None
    wanted = env.get(ENV, "auto") or "auto"
    if wanted not in CHOICES:
        return None, f"{ENV}={wanted!r} is not one of {', '.join(CHOICES)}; using the system allocator"
    if wanted == "system":
        return None, None
    tcmalloc = find_tcmalloc(env)[0] if tcmalloc is LOOK else tcmalloc
    glibc_keep = glibc_keep_possible() if glibc_keep is LOOK else glibc_keep
    if wanted == "auto":
        if (on_gpu_host() if gpu is LOOK else gpu) or "tcmalloc" in env.get("LD_PRELOAD", ""):
            return None, None
        if tcmalloc:
            return "tcmalloc", None
        return ("glibc-keep", None) if glibc_keep else (None, None)
    if wanted == "tcmalloc":
        if tcmalloc:
            return "tcmalloc", None
        return None, (f"{ENV}=tcmalloc: no tcmalloc library found (Debian/Ubuntu: apt-get install "
                      "libtcmalloc-minimal4); using the system allocator")
    if glibc_keep:
        return "glibc-keep", None
    return None, f"{ENV}=glibc-keep: needs glibc 2.26 or later; using the system allocator"


def environment(choice, env=None, tcmalloc=None):
    """The environment to start the process again with `choice`."""
    env = dict(os.environ if env is None else env)
    env[STARTED] = choice
    if choice == "tcmalloc":
        path = tcmalloc or find_tcmalloc(env)[0]
        env["LD_PRELOAD"] = " ".join(p for p in (path, env.get("LD_PRELOAD", "")) if p)
    elif choice == "glibc-keep":
        tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
        env["GLIBC_TUNABLES"] = ":".join(tunables + list(GLIBC_KEEP))
    return env


def restart_with_fast_allocator():
    """At a command's start: start this process again with a faster allocator where one helps
    (does not return then); otherwise return, having noted anything asked for and not had."""
    tcmalloc, problem = find_tcmalloc()
    choice, note = plan(tcmalloc=tcmalloc)
    for line in (problem, note):
        if line and os.environ.get(STARTED) is None:
            print(f"tlres: {line}", file=sys.stderr)
    if choice is None:
        return
    argv = getattr(sys, "orig_argv", None)
    if not argv or not sys.executable:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable] + list(argv[1:]), environment(choice, tcmalloc=tcmalloc))
    except OSError:  # cannot start again: carry on as started
        return


def describe(env=None):
    """What this process allocates with: 'tcmalloc', 'glibc, keeps what it frees', 'glibc, huge
    pages', 'glibc' or 'musl' etc."""
    env = os.environ if env is None else env
    preload = env.get("LD_PRELOAD", "")
    if "tcmalloc" in preload:
        return "tcmalloc"
    if "jemalloc" in preload:
        return "jemalloc"
    name = platform.libc_ver()[0] or "system"
    tunables = env.get("GLIBC_TUNABLES", "").split(":")
    if all(t in tunables for t in GLIBC_KEEP):
        return f"{name}, keeps what it frees"
    if "glibc.malloc.hugetlb=1" in tunables:
        return f"{name}, huge pages"
    return name
