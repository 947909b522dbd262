"""Sizes with bounds: every field of the config has a type, choices or a range, and the memory
pre-flight is the documented formula. Bad files and command lines that meet these bounds:
tests/data/test_hostile_files.py and tests/commands/test_bad_inputs.py."""

import pytest

from tlres.core import config, memory
from tlres.core.errors import TlresError

TINY = config.QUICK.replace(arch="tiny", image_size=8, batch_size=8, epochs=1)


def one_line(exc_info):
    text = str(exc_info.value)
    assert text and "\n" not in text
    return text


def test_config_validates_every_field_type_choice_and_range():
    for change, words in [({"epochs": "3"}, "--epochs must be an integer, got '3'"),
                          ({"seed": [1]}, "--seed must be an integer, got [1]"),
                          ({"arch": "vgg"}, "--arch must be one of resnet50, resnet50_v1_5, tiny"),
                          ({"image_size": 12000}, "--image-size must be 8..1024 pixels, got 12000"),
                          ({"image_size": True}, "--image-size must be an integer, got True"),
                          ({"lr": float("nan")}, "--lr must be a finite number"),
                          ({"augment": 1}, "--augment must be true or false, got 1"),
                          ({"data": None}, "--data must be a string, got None")]:
        with pytest.raises(TlresError) as e:
            TINY.replace(**change).validate()
        assert one_line(e) == words or one_line(e).startswith(words), (change, str(e.value))
    for preset in config.PRESETS.values():
        assert preset.validate() is preset


def test_memory_estimate_is_the_documented_formula():
    cfg = config.QUICK.replace(image_size=64, batch_size=16)
    assert memory.estimate(cfg) == 1.9e9 + 3500 * 64 * 64 * 16
    memory.check_fits(cfg, have=2e9)  # 2.1 GB is not over 2 x 2 GB: it runs
    with pytest.raises(TlresError) as e:
        memory.check_fits(cfg.replace(batch_size=256), have=2e9)  # 5.6 GB > 4 GB
    assert one_line(e) == ("--image-size 64 with --batch-size 256 needs about 5.6 GB of memory to train "
                           "--arch resnet50, and 2.0 GB is available; lower --batch-size or --image-size")
