"""The small things a first run shows a new user: plurals, --help, the lr column, what
metrics.json's `loss` is, and why a very short run's evaluation reads badly."""

import csv
import json
import os
import re

import numpy as np
import pytest

from tlres.commands import cli
from tlres.core import config, errors
from tlres.run import evaluate, train
from tlres.commands import train as train_cmd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_help_states_each_default_once():
    parser = cli.build_parser("prog", config.IMPROVED, config.PRESETS)
    fmt = cli.DefaultsHelp("prog")
    for action in parser._actions:
        shown = fmt._get_help_string(action).replace("%(default)s", str(action.default))
        assert shown.count("(default") <= 1, (action.option_strings, shown)
    text = " ".join(parser.format_help().split())
    assert "--out OUT run directory (default: runs/<preset>-<time>) --" in text  # once, no None
    assert "(default: None)" not in text
    assert "(default: --augment)" in text and "--epochs EPOCHS training epochs (default: 50)" in text


def test_docs_quote_the_preset_error_as_it_is(capsys):
    with pytest.raises(SystemExit):
        cli.parse_all(["--preset", "paper"], "improved", "prog")
    err = capsys.readouterr().err
    quoted = re.search(r"argument --preset: invalid choice: 'paper' \(choose from [^)]*\)", err).group(0)
    assert all(name in quoted for name in config.PRESETS), quoted
    with open(os.path.join(ROOT, "docs", "bad-input.md")) as f:  # the bad-input table
        assert quoted in f.read()


def test_plural():
    assert [errors.plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]


def test_lr_is_the_optimizers_float32_in_its_shortest_digits():
    import keras

    from tlres.run.schedules import current_lr

    for rate in (1e-3, 0.01, 0.1 * (1 + np.cos(np.pi / 3)) / 2):
        got = current_lr(keras.optimizers.SGD(rate))
        assert np.float32(got) == np.float32(rate)  # the very float32 the optimizer holds
        digits = re.sub(r"^0\.0*|e.*$|\.", "", repr(got))
        assert len(digits) <= 9, repr(got)  # 9 significant digits identify any float32
    assert repr(current_lr(keras.optimizers.SGD(1e-3))) == "0.001"


def test_metrics_say_what_their_loss_is():
    from tlres.run.losses import SmoothedCrossEntropy

    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.2, 0.1]])
    labels = np.array([0, 2])
    m = evaluate.metrics(logits, labels, 3, SmoothedCrossEntropy(3, 0.1, "paper"))
    assert m["loss_criterion"].startswith("label-smoothed cross-entropy, epsilon 0.1, the paper's eq. 11")
    assert "cross_entropy is the plain one" in m["loss_criterion"] and m["loss"] > m["cross_entropy"]
    m = evaluate.metrics(logits, labels, 3, SmoothedCrossEntropy(3, 0.0))
    assert m["loss_criterion"].startswith("cross-entropy") and m["loss"] == pytest.approx(m["cross_entropy"])
    assert evaluate.metrics(logits, labels, 3)["loss_criterion"] == "cross-entropy"


def test_bn_note_names_the_weight_left_on_the_initial_statistics():
    note = train.bn_note(0.9, 3)  # 0.9 ** 3 = 0.729
    assert "only 3 updates" in note and "still weigh 73%" in note
    assert "still weigh 12%" in train.bn_note(0.9, 20)  # 0.9 ** 20 = 0.1216
    assert train.bn_note(0.9, 44) is None  # 0.9 ** 44 = 0.0097 < 1%
    assert train.bn_note(0.99, 100) is not None  # Keras' default momentum: 0.99 ** 100 = 0.37


@pytest.mark.slow  # a real one-epoch run of the tiny network
def test_one_epoch_run_reads_right(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "mine.npz"
    np.savez(data, x_train=rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(24) % 3, x_test=rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(9) % 3)
    out = tmp_path / "run"
    assert train_cmd.main(["--preset", "quick", "--arch", "tiny", "--data", str(data), "--epochs", "1",
                           "--batch-size", "8", "--out", str(out)], "prog") == 0
    text = capsys.readouterr().out
    assert "1 epoch," in text and "1 epochs" not in text
    # 24 images / batch 8 = 3 steps: 0.9 ** 3 = 73% of the initial statistics left
    assert "tlres: note: BatchNorm's moving statistics had only 3 updates" in text and "73%" in text
    with open(out / "history.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["lr"] == "0.001"  # the quick preset's rate, not 0.0010000000474974513
    m = json.loads((out / "metrics.json").read_text())
    assert m["loss_criterion"].startswith("label-smoothed cross-entropy, epsilon 0.1")
