"""The cross-framework check's shared start: per seed, the PyTorch run starts from the weights
tlres' run of that seed starts from, head included (--init tlres)."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from tlres.analysis import ablation  # noqa: E402
from tlres.core.config import get_config  # noqa: E402
from tlres.net import convert
from tlres.core.errors import TlresError  # noqa: E402
from tlres.reference import crosscheck  # noqa: E402
from tlres.reference import torch as ref  # noqa: E402

CELL = ablation.cells(**dict(get_config(runlocal=True, use="grid"), arch="tiny"))["improved"]

# tlres' runner builds its model in its own process: what it starts from there, per seed
FRESH = """
import hashlib, sys
import numpy as np
from tlres.analysis import ablation
from tlres.core.config import get_config
from tlres.net import model
from tlres.run import train
cell = ablation.cells(**dict(get_config(runlocal=True, use="grid"), arch="tiny"))["improved"].replace(seed=int(sys.argv[1]))
train.setup_engine(cell)
net = model.build(10, cell)
print(hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in net.get_weights())).hexdigest())
"""


def _keras_order_sha(state):
    """The state dict's tensors in Keras' get_weights() order and layout, hashed."""
    from tlres.net import model
    from tlres.run import train

    cell = CELL.replace(seed=0)
    train.setup_engine(cell)
    net = model.build(10, cell)
    backbone = next(l for l in net.layers if hasattr(l, "layers"))
    convert.from_torch(backbone, state, "test", arch="tiny")
    head = convert.layout(backbone)[2]
    net.get_layer("head").set_weights([state[f"{head}weight"].T, state[f"{head}bias"]])
    return hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in net.get_weights())).hexdigest()


def test_init_files_hold_what_the_runner_starts_from_in_a_fresh_process(tmp_path):
    paths = crosscheck.initial_weights(str(tmp_path), CELL, seeds=2, base_seed=1)
    assert [os.path.basename(p) for p in paths] == ["seed0.safetensors", "seed1.safetensors"]
    for k, path in enumerate(paths):
        state = convert.read_state_dict(path, path)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
        fresh = subprocess.run([sys.executable, "-c", FRESH, str(1 + k)], capture_output=True, text=True,
                               check=True, env=env).stdout.split()[-1]
        assert _keras_order_sha(state) == fresh, f"seed {1 + k}"
    a, b = (convert.read_state_dict(p, p) for p in paths)
    assert any(not np.array_equal(a[k], b[k]) for k in a)  # seeds differ


def test_reference_loads_the_whole_init_head_included(tmp_path):
    (path,) = crosscheck.initial_weights(str(tmp_path), CELL, seeds=1, base_seed=0)
    model = ref.build(CELL, 10)
    sha = ref.load_init(model, path)
    with open(path, "rb") as f:
        assert sha == hashlib.sha256(f.read()).hexdigest()
    want = convert.read_state_dict(path, path)
    got = model.state_dict()
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k].numpy(), want[k])


def test_init_of_another_shape_is_one_line(tmp_path):
    (path,) = crosscheck.initial_weights(str(tmp_path), CELL, seeds=1, base_seed=0)
    with pytest.raises(TlresError, match="--init .*does not fit"):
        ref.load_init(ref.build(CELL, 7), path)  # 7 classes: the head's shape differs
    with pytest.raises(TlresError, match="no such file"):
        ref.load_init(ref.build(CELL, 10), str(tmp_path / "missing.safetensors"))


def test_v1_has_no_twin_to_share_weights_with():
    with pytest.raises(TlresError, match="no PyTorch twin"):
        crosscheck.torch_cell(CELL.replace(arch="resnet50"), None, "tlres")
    assert crosscheck.torch_cell(CELL, None, "tlres") == CELL


def _no_training(monkeypatch):
    """crosscheck.run with every step that trains or loads weights failing loudly: a refusal
    must come before them."""
    def trains(*a, **k):
        raise AssertionError("trained before refusing")
    for name in ("initial_weights", "torch_side", "tlres_side"):
        monkeypatch.setattr(crosscheck, name, trains)


def test_a_compare_file_tlres_did_not_write_is_refused_before_training(tmp_path, monkeypatch):
    _no_training(monkeypatch)
    out = tmp_path / "cc"
    out.mkdir()
    (out / "compare.md").write_text("my notes\n")
    with pytest.raises(TlresError, match="compare.md exists and tlres did not write it"):
        crosscheck.run(str(out), dict(get_config(runlocal=True, use="grid"), arch="tiny"), seeds=1)
    assert (out / "compare.md").read_text() == "my notes\n" and os.listdir(out) == ["compare.md"]


def test_a_linked_compare_file_is_refused_and_its_target_untouched(tmp_path, monkeypatch):
    _no_training(monkeypatch)
    out = tmp_path / "cc"
    out.mkdir()
    target = tmp_path / "elsewhere.md"
    target.write_text("not tlres'\n")
    os.symlink(target, out / "compare.md")
    (out / ".tlres-run.json").write_text('{"kind": "files tlres wrote in this folder", "owned": ["compare.md"]}')
    with pytest.raises(TlresError, match="symbolic link"):  # even where the marker names it
        crosscheck.run(str(out), dict(get_config(runlocal=True, use="grid"), arch="tiny"), seeds=1)
    assert target.read_text() == "not tlres'\n"


def test_its_own_compare_file_is_replaced(tmp_path, monkeypatch):
    """A second call into OUT rewrites compare.md (its marker names it); a user's file stays."""
    from tlres.analysis import compare

    out = tmp_path / "cc"
    recorded = [{"metrics": {"accuracy": 0.5, "num_test": 10, "loss": 1.0}, "framework": {"name": "x"},
                 "config": {"seed": 0}, "history": []}]
    monkeypatch.setattr(crosscheck, "initial_weights", lambda *a: None)
    monkeypatch.setattr(crosscheck, "torch_side", lambda *a: ["t"])
    monkeypatch.setattr(crosscheck, "tlres_side", lambda *a: ["k"])
    monkeypatch.setattr(crosscheck.results, "from_run_dir", lambda d: recorded[0])
    monkeypatch.setattr(compare, "plot", lambda sides, path: open(path, "w").close())
    for command in ("FIRST", "SECOND"):
        assert crosscheck.run(str(out), dict(get_config(runlocal=True, use="grid"), arch="tiny"), seeds=1, command=command) == 0
        (out / "notes.txt").write_text("mine\n")
    text = (out / "compare.md").read_text()
    assert "`SECOND`" in text and text.startswith("# Cross-framework check (")
    assert (out / "notes.txt").read_text() == "mine\n"
