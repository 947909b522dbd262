"""The command line's allocator choice (`tlres.net.cpu.allocator`): the rule, the restart, and that the
chosen allocator does what it is chosen for: a large buffer allocated again and again stops
page-faulting (XLA:CPU allocates each training step's temporaries afresh)."""

import json
import os
import subprocess
import sys

import pytest

from tlres.net.cpu import allocator

THP = "/sys/kernel/mm/transparent_hugepage/enabled"
HOST = {"tcmalloc": "/usr/lib/libtcmalloc_minimal.so.4", "glibc_keep": True, "gpu": False}


@pytest.mark.parametrize("env,host,want", [
    ({}, HOST, ("tcmalloc", None)),
    ({}, {**HOST, "tcmalloc": None}, ("glibc-keep", None)),
    ({}, {**HOST, "tcmalloc": None, "glibc_keep": False}, (None, None)),
    ({}, {**HOST, "gpu": True}, (None, None)),  # an accelerator computes: the process stays as started
    ({"TLRES_ALLOCATOR": "system"}, HOST, (None, None)),
    ({"TLRES_ALLOCATOR": "glibc-keep"}, HOST, ("glibc-keep", None)),
    ({"TLRES_ALLOCATOR_STARTED": "tcmalloc"}, HOST, (None, None)),  # restarted already: no loop
    ({"LD_PRELOAD": "/opt/libtcmalloc.so.4"}, HOST, (None, None)),  # the user preloaded it
])
def test_the_rule(env, host, want, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    assert allocator.plan(env, **host) == want


@pytest.mark.parametrize("env,host,says", [
    ({"TLRES_ALLOCATOR": "tcmalloc"}, {**HOST, "tcmalloc": None}, "apt-get install libtcmalloc-minimal4"),
    ({"TLRES_ALLOCATOR": "glibc-keep"}, {**HOST, "glibc_keep": False}, "glibc 2.26"),
    ({"TLRES_ALLOCATOR": "fast"}, HOST, "not one of auto, system, tcmalloc, glibc-keep"),
])
def test_what_cannot_be_had_is_one_line_and_the_system_allocator(env, host, says, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    choice, note = allocator.plan(env, **host)
    assert choice is None and says in note and "\n" not in note


def test_the_environment_keeps_what_the_user_set():
    env = allocator.environment("tcmalloc", {"LD_PRELOAD": "/x/libmine.so"}, tcmalloc="/y/libtcmalloc.so.4")
    assert env["LD_PRELOAD"] == "/y/libtcmalloc.so.4 /x/libmine.so"
    env = allocator.environment("glibc-keep", {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"})
    assert env["GLIBC_TUNABLES"] == ("glibc.malloc.tcache_count=0:glibc.malloc.mmap_max=0:"
                                     "glibc.malloc.arena_max=1:glibc.malloc.trim_threshold=1099511627776")
    assert env["TLRES_ALLOCATOR_STARTED"] == "glibc-keep"
    assert allocator.describe({"GLIBC_TUNABLES": env["GLIBC_TUNABLES"]}).endswith("keeps what it frees")
    assert allocator.describe({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}).endswith("huge pages")
    assert allocator.describe({"LD_PRELOAD": "/y/libtcmalloc.so.4"}) == "tcmalloc"


CHILD = """
import json, os, resource, sys
from tlres import __main__
from tlres.net.cpu import allocator
__main__.own_command_line()  # what the tlres command does first
import ctypes
libc = ctypes.CDLL(None)  # malloc and free as the process has them (preloaded or glibc's)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(64 << 20)  # 64 MiB, every page written, as XLA's step buffer
    ctypes.memset(p, 1, 64 << 20)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    libc.free(p)
print(json.dumps({"started": os.environ.get("TLRES_ALLOCATOR_STARTED"), "allocator": allocator.describe(),
                  "faults": faults}))
"""


def _child(choice):
    env = {**os.environ, "TLRES_ALLOCATOR": choice}
    env.pop("TLRES_ALLOCATOR_STARTED", None)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_restart_takes_the_allocator_and_the_faults_go():
    """A command's start (`tlres.__main__.own_command_line`) restarts the process with the allocator. 64 MiB is
    16,384 pages of 4 KiB: glibc maps and faults all of them on every allocation. After the restart
    (tcmalloc, or glibc keeping what it frees: the block is kept) the later allocations fault at
    most a tenth of that. Both choices are checked where the host has them."""
    choices = [c for c in ("tcmalloc", "glibc-keep") if allocator.plan({"TLRES_ALLOCATOR": c})[0]]
    if not choices:
        pytest.skip("this host has neither tcmalloc nor glibc >= 2.26")
    system = _child("system")
    assert system["started"] is None
    fast = {c: _child(c) for c in choices}
    for c, got in fast.items():
        assert got["started"] == c
        assert got["allocator"] == {"tcmalloc": "tcmalloc", "glibc-keep": "glibc, keeps what it frees"}[c]
    if os.path.exists(THP) and "[always]" in open(THP).read():
        # the kernel gives glibc's own blocks huge pages already
        pytest.skip("transparent huge pages are 'always' here: the system allocator does not fault per page")
    assert min(system["faults"][1:]) >= 16384 * 0.9  # every page, every time: what is fixed
    for got in fast.values():
        assert max(got["faults"][1:]) <= 16384 / 10, got


# --- only a tcmalloc the user chose: the fixed system folders, or TLRES_TCMALLOC ---

CRAFTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void loaded(void) {
    FILE *f = fopen(MARK, "w");
    if (f) { fputs("loaded\n", f); fclose(f); }
}
"""
SHOW = """
import os
from tlres import __main__
__main__.own_command_line()
maps = open("/proc/self/maps").read()
print(os.environ.get("LD_PRELOAD", ""), "|", "crafted" if "libtcmalloc_minimal.so" in maps else "-")
"""


@pytest.fixture
def crafted(tmp_path):
    """A `libtcmalloc_minimal.so` with an absolute SONAME (no genuine tcmalloc has one) whose
    constructor writes `mark` when the library is loaded, in a folder `evil`."""
    if subprocess.run(["which", "gcc"], capture_output=True).returncode:
        pytest.skip("needs gcc to build the crafted library")
    evil, mark = tmp_path / "evil", tmp_path / "loaded.txt"
    evil.mkdir()
    (evil / "e.c").write_text(CRAFTED)
    lib = evil / "libtcmalloc_minimal.so"
    subprocess.run(["gcc", "-shared", "-fPIC", f'-DMARK="{mark}"', "-o", str(lib), str(evil / "e.c"),
                    f"-Wl,-soname,{lib}"], check=True)
    return lib, mark


def _env(**extra):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **extra}  # a CPU host: the rule restarts the process
    for k in ("TLRES_ALLOCATOR_STARTED", "TLRES_ALLOCATOR", "TLRES_TCMALLOC", "LD_PRELOAD"):
        if k not in extra:
            env.pop(k, None)
    return env


@pytest.mark.parametrize("wanted", ["auto", "tcmalloc"])
def test_a_library_on_the_search_paths_is_not_preloaded(crafted, wanted):
    """The environment's search paths (LIBRARY_PATH for gcc, LD_LIBRARY_PATH for ld) hold the
    crafted library: the real command starts, and the library is never loaded."""
    lib, mark = crafted
    env = _env(LIBRARY_PATH=str(lib.parent), LD_LIBRARY_PATH=str(lib.parent), TLRES_ALLOCATOR=wanted)
    out = subprocess.run([sys.executable, "-m", "tlres", "--help"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not mark.exists()
    shown = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert str(lib) not in shown.stdout and shown.stdout.split("|")[1].strip() == "-"
    assert not mark.exists()


def test_no_program_runs_at_start(tmp_path):
    """gcc, ld and objdump (what a library search runs) earlier on PATH, each leaving a mark:
    starting a command runs none of them."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("gcc", "cc", "ld", "objdump", "ldconfig"):
        (bin_ / tool).write_text(f"#!/bin/sh\necho ran > {tmp_path}/{tool}.ran\nexit 1\n")
        (bin_ / tool).chmod(0o755)
    env = _env(PATH=f"{bin_}:{os.environ.get('PATH', '')}")
    out = subprocess.run([sys.executable, "-m", "tlres", "--help"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.glob("*.ran")) == []


def test_the_library_the_user_names_is_preloaded(crafted):
    """TLRES_TCMALLOC names a file: that one is preloaded (the user chose it), and only then."""
    lib, mark = crafted
    env = _env(TLRES_TCMALLOC=str(lib))
    shown = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split("|")[0].split() == [str(lib)]
    assert shown.stdout.split("|")[1].strip() == "crafted"
    assert mark.read_text() == "loaded\n"


@pytest.mark.parametrize("named", ["missing.so", "."])
def test_a_named_library_that_is_not_a_readable_file_is_one_line(tmp_path, named):
    env = _env(TLRES_TCMALLOC=str(tmp_path / named))
    shown = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    lines = [ln for ln in shown.stderr.splitlines() if "TLRES_TCMALLOC" in ln]
    assert lines == [f"tlres: TLRES_TCMALLOC={str(tmp_path / named)!r} is not a readable file; not preloading it"]
    assert str(tmp_path) not in shown.stdout.split("|")[0]
