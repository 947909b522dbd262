"""The process' memory allocator on a CPU host: a faster one for the command line, chosen at start.

XLA:CPU allocates each training step's temporary buffer afresh (about 200 MB for ResNet50 at
32 px, batch 64) and frees it at the step's end. glibc's malloc serves blocks that large with a
fresh `mmap` and returns them with `munmap`, so every step the kernel maps and zeroes the
buffer again, one 4 KiB page fault at a time: about 54,000 faults a step, a sixth of a 2-core
host's time (docs/speed.md has the measurement). Two remedies, both outside Python's reach once
the process runs, so the `tlres` command applies one by starting itself again (`os.execve`,
before anything heavy is imported), as PyTorch's own CPU launcher
(`python -m torch.backends.xeon.run_cpu --enable-tcmalloc`) does:

- tcmalloc, where the host has it (Debian/Ubuntu: ``apt-get install libtcmalloc-minimal4``),
  preloaded (``LD_PRELOAD``): it keeps freed blocks and hands them back, no page faults. Only
  from the fixed system folders (`LIB_DIRS`), or the file the user names in `TLRES_TCMALLOC`:
  never from a search the environment steers (``LIBRARY_PATH``, a ``gcc`` on ``PATH``);
- otherwise glibc told by its tunables to keep what it frees (`GLIBC_KEEP`, glibc 2.26 or later):
  no block from `mmap` (each large one would be unmapped when freed), one arena (each thread's
  own arena maps and unmaps 64 MiB heaps), no trimming of the heap's top: after the first
  step the buffers are pages the process holds already, no page faults.

`TLRES_ALLOCATOR=system` keeps the process as started; `=tcmalloc` or `=glibc-keep` asks for one
(a one-line note, and the system's, where it is not available). glibc's 2 MiB pages
(``glibc.malloc.hugetlb=1``), the fallback before, still faulted and zeroed every step's buffers
(in 2 MiB pages): 13% slower than tcmalloc at batch 256, where keeping them is 6% slower. Nothing here changes what a run
computes: only where its buffers live. What the process runs with is recorded (`describe`):
config.json's "device" and the benchmark's first line.
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
