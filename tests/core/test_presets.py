"""Baseline vs improved presets: they differ in exactly the paper's four switches."""

import dataclasses
import json
import os

from tlres.commands import cli
from tlres.core.config import BASELINE, IMPROVED, PRESETS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_baseline_and_improved_differ_in_exactly_four_switches():
    differ = {f.name for f in dataclasses.fields(IMPROVED)
              if getattr(IMPROVED, f.name) != getattr(BASELINE, f.name)}
    assert differ == {"weights", "augment", "label_smoothing", "schedule", "preset"}
    assert (BASELINE.weights, BASELINE.augment, BASELINE.label_smoothing, BASELINE.schedule) == \
        ("none", False, 0.0, "constant")
    assert (IMPROVED.weights, IMPROVED.augment, IMPROVED.label_smoothing, IMPROVED.schedule) == \
        ("imagenet", True, 0.1, "cosine-epoch")
    assert PRESETS["baseline"] is BASELINE


def test_baseline_entry_point_defaults_to_baseline_and_switches_are_independent():
    cfg, _ = cli.parse([], "baseline", "prog")
    assert cfg == BASELINE
    cfg, _ = cli.parse(["--augment"], "baseline", "prog")
    assert cfg == BASELINE.replace(augment=True)
    cfg, _ = cli.parse(["--label-smoothing", "0.1"], "baseline", "prog")
    assert cfg == BASELINE.replace(label_smoothing=0.1)


def test_paper_json_has_the_papers_numbers():
    with open(os.path.join(ROOT, "experiments", "paper.json")) as fh:
        p = json.load(fh)
    assert p["improved"]["accuracy"] == 93.75 and p["baseline"]["accuracy"] == 87.50
    # the two readings: 10,000 images as the paper states; 64 (60/64, 56/64) as we infer
    assert [(r["key"], r["n_test"]) for r in p["readings"]] == [("10,000, stated", 10000), ("64, inferred", 64)]
    assert 60 / 64 * 100 == 93.75 and 56 / 64 * 100 == 87.50
    assert p["improved"]["accuracy"] - p["baseline"]["accuracy"] == p["difference"]


def test_augment_switch_off_gives_exactly_the_normalized_input_and_on_changes_it():
    import numpy as np

    from tlres.data import pipeline

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(16, 8, 8, 3), dtype=np.uint8)
    y = np.arange(16, dtype=np.int32)  # label = row index, to find each image again
    expected = (x.astype(np.float64) / 255.0 - 0.5) / 0.5  # the paper's normalization, by hand
    # float32 pixels: x/255 (or times a rounded 1/255) and the subtraction round at most 3 times,
    # each <= u of a value <= 1; /0.5 is exact: <= 6u from the float64 value
    tol = 6 * 2.0 ** -24
    off = BASELINE.replace(batch_size=4, crop_padding=2)
    changed = 0
    for images, labels in pipeline.train_dataset(x, y, off):
        assert np.abs(images.numpy() - expected[labels.numpy()]).max() <= tol
    for images, labels in pipeline.train_dataset(x, y, off.replace(augment=True)):
        changed += int(np.abs(images.numpy() - expected[labels.numpy()]).max() > tol)
    assert changed > 0


def test_the_offline_digits_settings_are_one_set_for_the_preset_the_grid_and_parity():
    """get_config(runlocal=True): written out by hand here, in the order the crosscheck summary lists them."""
    from tlres.core.config import QUICK, get_config

    learn = dict(flip=False, optimizer="adam", lr=1e-3, weight_decay=0.0, epochs=4)
    grid = get_config(runlocal=True, use="grid")
    assert list(grid.items()) == list(dict(data="digits", weights="none", **learn).items())
    parity = get_config(runlocal=True, use="parity")
    assert list(parity.items()) == [("data", "digits"), ("weights", "none"), ("arch", "resnet50_v1_5"),
                                    ("schedule", "constant"), ("batch_size", 32)]
    assert QUICK == IMPROVED.replace(preset="quick", augment=False, **grid) and PRESETS["quick"] is QUICK
    assert get_config() == get_config(use="parity") == {}  # the paper's own run changes nothing
    with open(os.path.join(ROOT, "docs", "presets.md")) as f:  # the presets table's quick row
        row = next(line for line in f if line.startswith("| `quick` |"))
    flags = row.rstrip(" |\n").rsplit("`", 2)[-2].split()
    assert cli.parse(flags, "improved", "prog")[0] == QUICK.replace(preset="improved")


def test_the_offline_commands_take_the_one_set():
    from tlres.commands import crosscheck, parity
    from tlres.core.config import get_config

    _, cfg, _ = parity.parse(["--out", "x", "--epochs", "2"])
    assert cfg == IMPROVED.replace(**get_config(runlocal=True, use="parity"), epochs=2)
    _, overrides = crosscheck.parse(["--out", "x", "--lr", "0.1"])
    assert overrides == {**get_config(runlocal=True, use="grid"), "arch": "resnet50_v1_5", "lr": 0.1}


PHOTOS_OPTIONS = {}  # the options beyond the paper it turns on: none helped on the offline grid


def test_the_photos_preset_is_the_improved_recipe_with_its_documented_changes_only():
    """The photos preset's changes, written out by hand here: ImageNet's 224 px, the weights' own
    normalization, the paper's pad-4-of-32 crop scaled to 224 px; and docs/presets.md's row says
    the same flags."""
    from tlres.core.config import PHOTOS

    assert PHOTOS == IMPROVED.replace(preset="photos", data="photos", image_size=224,
                                      input_norm="caffe", crop_padding=28, **PHOTOS_OPTIONS)
    assert PHOTOS.crop_padding / PHOTOS.image_size == 4 / 32 and PRESETS["photos"] is PHOTOS
    with open(os.path.join(ROOT, "docs", "presets.md")) as f:
        row = next(line for line in f if line.startswith("| `photos` |"))
    flags = row.rstrip(" |\n").rsplit("`", 2)[-2].split()
    assert cli.parse(flags, "improved", "prog")[0] == PHOTOS.replace(preset="improved")
