"""The command line's allocator choice (`tlres.allocator`): the rule, the restart, and that the
chosen allocator does what it is chosen for: a large buffer allocated again and again stops
page-faulting (XLA:CPU allocates each training step's temporaries afresh)."""

import json
import os
import subprocess
import sys

import pytest

from tlres import allocator

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
from tlres import allocator, cli
cli.command_line(None)  # what every tlres command does first with its own command line
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
    """A command's start (`cli.command_line`) restarts the process with the allocator. 64 MiB is
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
