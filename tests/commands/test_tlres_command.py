"""The `tlres` command: one verb per tool, each verb's --help, the console script entry."""

import os
import subprocess
import sys

import pytest

from tlres import __main__ as tlres_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VERBS = ["train", "predict", "export", "ablation", "report", "compare", "results", "bench", "crosscheck", "torch",
         "parity"]


def test_help_lists_every_verb_on_one_line(capsys):
    assert tlres_main.main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [l.split()[0] for l in out.splitlines() if l.startswith("  ")]
    assert listed == VERBS
    assert all(len(l) <= 100 for l in out.splitlines())


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_help_works(verb, capsys):
    with pytest.raises(SystemExit) as e:
        tlres_main.main([verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tlres {verb} ")


def test_unknown_verb_and_no_verb_are_exit_2(capsys):
    assert tlres_main.main(["fit"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown verb 'fit'" in err[0]
    assert tlres_main.main([]) == 2
    assert "usage: tlres VERB" in capsys.readouterr().err


def test_train_verb_errors_name_tlres_train(tmp_path, capsys):
    assert tlres_main.main(["train", "--preset", "quick", "--data", str(tmp_path / "no.npz"),
                            "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tlres train: error: --data") and "no such file" in err[0]


def test_python_dash_m_tlres_and_the_console_script_entry():
    r = subprocess.run([sys.executable, "-m", "tlres", "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0 and "predict" in r.stdout
    try:
        import tomllib
    except ImportError:  # Python 3.10
        pytest.skip("tomllib needs Python 3.11")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts == {"tlres": "tlres.__main__:main"}
