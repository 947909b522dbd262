"""The command line: help, presets and overrides, the error path every command shares (its bad
inputs, one line each, are tests/commands/test_bad_inputs.py)."""

import os
import subprocess
import sys

import pytest

from tlres.commands import cli
from tlres.core.config import IMPROVED, QUICK

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "tlres.experiments.improved", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_help_documents_every_flag_with_default():
    """Every Config field is a flag, with its help text and the improved preset's default."""
    import dataclasses

    from tlres.core.config import Config

    r = run_cli("--help", env={"COLUMNS": "1000"})  # no wrapping: one line per option
    assert r.returncode == 0
    entries, current = {}, None
    for line in r.stdout.split("options:")[1].splitlines():
        if line.startswith("  -"):  # an option: its flags, then its help on this line or the next
            flags, _, text = line.strip().partition("  ")
            current = flags.split()[0].rstrip(",")
            entries[current] = [flags, text]
        elif line.startswith("    ") and current:
            entries[current][1] += " " + line
    entries = {k: (flags, " ".join(text.split())) for k, (flags, text) in entries.items()}
    fields = [f for f in dataclasses.fields(Config) if f.name != "preset"]
    runner = {"-h", "--preset", "--debug", "--overwrite", "--resume"}  # the command's own flags
    assert set(entries) == runner | {"--" + f.name.replace("_", "-") for f in fields}
    for f in fields:
        flag = "--" + f.name.replace("_", "-")
        assert flag in entries, flag
        flags, text = entries[flag]
        if isinstance(f.default, bool):
            assert flags == f"{flag}, --no-{flag[2:]}", flags
        assert " ".join(f.metadata["help"].split()) in text, flag  # the field's own help text
        value = getattr(IMPROVED, f.name)
        if isinstance(value, bool):  # an on/off pair names the flag that is the default
            value = flag if value else f"--no-{flag[2:]}"
        if value is None:  # no value to show (the help may say in words what happens)
            assert "(default: None)" not in text and text.count("(default:") <= 1, (flag, text)
        else:
            assert f"(default: {value})" in text, (flag, text)
    assert "(default: improved)" in entries["--preset"][1]


def test_preset_then_overrides():
    cfg, _ = cli.parse(["--preset", "quick", "--epochs", "7"], "improved", "prog")
    assert cfg == QUICK.replace(epochs=7)
    cfg, _ = cli.parse(["--epochs", "7", "--preset", "quick"], "improved", "prog")
    assert cfg == QUICK.replace(epochs=7)
    cfg, _ = cli.parse(["--no-augment", "--weights", "None"], "improved", "prog")
    assert cfg == IMPROVED.replace(augment=False, weights="none")


def test_weights_none_in_any_letter_case_is_none_in_every_parser():
    from tlres.commands import ablation, torch as torch_cmd

    assert cli.parse_all(["--weights", "NONE"], "improved", "p")[0].weights == "none"
    assert torch_cmd.parse(["--weights", "nOnE"])[0].weights == "none"
    assert ablation.parse(["--out", "g", "--weights", "None"])[3] == {"weights": "none"}
    assert cli.parse_all(["--weights", "nonesuch.keras"], "improved", "p")[0].weights == "nonesuch.keras"


def test_the_torch_command_parses_as_the_runner_does(capsys):
    from tlres.commands import torch as torch_cmd

    argv = ["--preset", "baseline", "--epochs", "3", "--no-flip"]
    cfg, extra = torch_cmd.parse(argv + ["--device", "cpu", "--draws", "tlres"])
    assert cfg == cli.parse_all(argv, "improved", "p")[0] == IMPROVED.replace(
        preset="baseline", weights="none", augment=False, label_smoothing=0.0, schedule="constant",
        epochs=3, flip=False)
    assert (extra.device, extra.draws, extra.limit_train) == ("cpu", "tlres", None)
    for argv, says in ((["--resume", "r"], "--resume is not supported by the PyTorch reference"),
                       (["--preset", "paper"], "argument --preset: invalid choice: 'paper'")):
        with pytest.raises(SystemExit) as e:
            torch_cmd.parse(argv, prog="p")
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and err.startswith(f"p: error: {says}")


def test_brief_is_an_exception_on_one_line():
    from tlres.core.errors import brief

    assert brief(ValueError("bad\n  value\tthere ")) == "ValueError: bad value there"
    assert brief(KeyError()) == "KeyError"
    assert brief(OSError("x" * 500)) == "OSError: " + "x" * 200
    assert brief(OSError("abcdef"), limit=3) == "OSError: abc"


def test_paper_preset_values():
    assert (IMPROVED.data, IMPROVED.weights, IMPROVED.batch_size, IMPROVED.epochs) == (
        "cifar10", "imagenet", 64, 50)
    assert (IMPROVED.flip, IMPROVED.crop_padding, IMPROVED.input_norm) == (True, 4, "paper")
    assert (IMPROVED.smoothing_form, IMPROVED.schedule) == ("paper", "cosine-epoch")


def test_guarded_is_every_command_s_error_path(capsys):
    from tlres.commands.cli import guarded
    from tlres.core.errors import TlresError, TrainingFailed

    assert guarded("p", False, lambda: None) == 0
    assert guarded("p", False, lambda: "runs/x") == 0  # a command body may return its run dir
    assert guarded("p", False, lambda: 4) == 4

    def fail(exc):
        def body():
            raise exc
        return body

    assert guarded("p", False, fail(TlresError("bad input"))) == 2
    assert capsys.readouterr().err == "p: error: bad input\n"
    assert guarded("p", False, fail(TrainingFailed("nan"))) == 3
    assert guarded("p", False, fail(KeyboardInterrupt()), interrupted="stopped; kept") == 130
    assert capsys.readouterr().err.splitlines()[-1] == "p: stopped; kept"
    with pytest.raises(TlresError):
        guarded("p", True, fail(TlresError("bad input")))  # --debug: the traceback
