"""The caches tlres runs by (JAX's compilation cache, the convolution plan): created 0700, and a
folder another user could write to is not used (one warning line, once), with real folders."""

import json
import os
import stat
import subprocess
import sys

import pytest

from tlres.net import backend
from tlres.net.cpu import convplan, kernels

KEY = {"host": "test"}
SHAPE = {"batch": 2, "input": [4, 4, 3], "kernel": [3, 3], "filters": 4, "strides": [1, 1],
         "padding": "same", "dtype": "float32"}


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class Timed:
    def __init__(self):
        self.calls = 0

    def __call__(self, shape, kernel, repeats):
        self.calls += 1
        return {p: [0.001 if kernel == "xla" else 0.002] * repeats for p in kernels.PARTS}  # xla the faster


def test_a_new_plan_cache_folder_is_0700_and_used(tmp_path):
    folder = tmp_path / "new" / "cache"  # both created by tlres
    notes = []
    p = convplan.plan([SHAPE], Timed(), str(folder), key=KEY, note=notes.append)
    assert _mode(folder) == 0o700  # 0700 whatever the umask allows more
    assert os.path.exists(p["cache_file"]) and json.load(open(p["cache_file"]))["host"] == KEY
    again = Timed()
    assert convplan.plan([SHAPE], again, str(folder), key=KEY, note=notes.append)["source"] == "cache"
    assert again.calls == 0 and not [n for n in notes if "warning" in n]


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722])
def test_a_plan_cache_others_can_write_is_not_used(tmp_path, mode):
    """A plan placed in a world- or group-writable folder (anyone could have put it there) is
    neither read nor written: timed again, one warning, said once."""
    folder = tmp_path / "shared"
    folder.mkdir()
    planted = convplan.cache_file(str(folder), KEY)
    with open(planted, "w") as f:  # a valid plan choosing matmul, as another user could plant
        json.dump({"format": convplan.FORMAT, "host": KEY,
                   "shapes": {convplan.shape_key(SHAPE): {"kernel": "matmul",
                                                          "parts": dict.fromkeys(kernels.PARTS, "matmul")}}}, f)
    before = open(planted).read()
    folder.chmod(mode)
    notes, fn = [], Timed()
    p = convplan.plan([SHAPE], fn, str(folder), key=KEY, note=notes.append)
    assert fn.calls == 2 and p["source"] == "measured" and p["kernels"] == {convplan.shape_key(SHAPE): ("xla",) * 3}
    assert open(planted).read() == before  # not rewritten either
    warnings = [n for n in notes if "warning" in n]
    assert warnings == [f"tlres: warning: not using the convolution plan cache in {folder}: {folder} is "
                        f"writable by others (mode {mode:04o}); running without it"]
    convplan.plan([SHAPE], Timed(), str(folder), key=KEY, note=notes.append)
    assert len([n for n in notes if "warning" in n]) == 1  # once


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_cache_folder_of_another_user_is_not_used(tmp_path):
    folder = tmp_path / "theirs"
    folder.mkdir(0o700)
    os.chown(folder, 12345, 12345)
    assert backend.private_dir(str(folder), str(folder)) == f"{folder} belongs to another user (uid 12345)"


def test_every_folder_tlres_creates_is_checked(tmp_path):
    """<base>/tlres is tlres' own part: open to others there, the folders below are not used."""
    (tmp_path / "tlres").mkdir()
    (tmp_path / "tlres").chmod(0o757)
    final = tmp_path / "tlres" / "jax"
    assert backend.private_dir(str(tmp_path / "tlres"), str(final)) == (
        f"{tmp_path / 'tlres'} is writable by others (mode 0757)")
    (tmp_path / "tlres").chmod(0o755)  # a 0755 folder an earlier tlres made: no one else writes it
    assert backend.private_dir(str(tmp_path / "tlres"), str(final)) is None and _mode(final) == 0o700


COMPILE = """
import sys, jax
from tlres.net import backend
print(repr(backend.enable_compile_cache(sys.argv[1])), jax.config.jax_compilation_cache_dir)
"""


def _enable(path, env=None):
    env = {**os.environ, "XLA_FLAGS": "", **(env or {})}
    return subprocess.run([sys.executable, "-c", COMPILE, str(path)], env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_compilation_cache_in_an_open_folder_is_not_used(tmp_path):
    open_ = tmp_path / "open"
    open_.mkdir()
    open_.chmod(0o777)
    out = _enable(open_)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "None" and str(open_) not in out.stdout
    assert [ln for ln in out.stderr.splitlines() if "tlres" in ln] == [
        f"tlres: warning: not using the compilation cache in {open_}: {open_} is writable by others "
        "(mode 0777); running without it"]


def test_the_compilation_cache_is_created_0700_and_used(tmp_path):
    base = tmp_path / "xdg"
    out = subprocess.run([sys.executable, "-c", COMPILE.replace("sys.argv[1]", "None")],
                         env={**os.environ, "XLA_FLAGS": "", "XDG_CACHE_HOME": str(base)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [repr(str(base / "tlres" / "jax")), str(base / "tlres" / "jax")]
    assert _mode(base) == _mode(base / "tlres") == _mode(base / "tlres" / "jax") == 0o700
    assert "warning" not in out.stderr
