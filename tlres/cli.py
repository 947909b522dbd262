"""Command line generated from `tlres.config.Config`.

    python -m tlres.experiments.improved [--preset NAME] [--FLAG VALUE ...]

The preset (default: the entry point's) supplies every default; any flag given
overrides it, wherever it stands. `--help` shows the preset's values.
Errors a user can fix print one line and exit 2; `--debug` shows tracebacks.
"""

import argparse
import dataclasses
import sys

from tlres import config as config_lib
from tlres.errors import TlresError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _checked(kind, ok, rule):
    """An argparse type: parse with `kind`, then require `ok(value)`."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


POSITIVE = {"epochs", "batch_size", "lr", "image_size"}
NON_NEGATIVE = {"lr_min", "weight_decay", "momentum", "crop_padding", "label_smoothing"}


def _type(f):
    kind = type(f.default) if f.default is not None else str
    if f.name in POSITIVE:
        return _checked(kind, lambda v: v > 0, "must be positive")
    if f.name in NON_NEGATIVE:
        return _checked(kind, lambda v: v >= 0, "must be >= 0")
    return kind


def build_parser(prog, defaults, presets):
    p = _Parser(prog=prog, description=("Train and evaluate the paper's transfer-learning ResNet50 recipe "
                             "(Keras 3 on JAX). The preset supplies every default shown; "
                             "any flag overrides it."),
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(presets), default=defaults.preset,
                   help="start from this preset; any other flag overrides it")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    for f in dataclasses.fields(defaults):
        if f.name == "preset":
            continue
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        helptext = f.metadata.get("help", "")
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, help=helptext)
        else:
            p.add_argument(flag, type=_type(f), default=value, choices=f.metadata.get("choices"),
                           help=helptext)
    return p


def parse(argv, default_preset, prog):
    pre = _Parser(add_help=False)
    pre.add_argument("--preset", default=default_preset)
    known, _ = pre.parse_known_args(argv)
    if known.preset not in config_lib.PRESETS:
        pre.prog = prog
        pre.error(f"argument --preset: invalid choice: {known.preset!r} "
                  f"(choose from {', '.join(sorted(config_lib.PRESETS))})")
    base = config_lib.PRESETS[known.preset]
    args = build_parser(prog, base, config_lib.PRESETS).parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(base) if f.name != "preset"}
    if values["weights"].lower() == "none":
        values["weights"] = "none"
    return base.replace(preset=args.preset, **values), args.debug


def main(default_preset, argv=None, prog=None):
    argv = sys.argv[1:] if argv is None else argv
    prog = prog or f"python -m tlres.experiments.{default_preset}"
    cfg, debug = parse(argv, default_preset, prog)
    try:
        from tlres import train

        train.run(cfg)
    except TlresError as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


def entry(default_preset):
    """`python -m` entry: exit with main()'s status."""
    sys.exit(main(default_preset))


__all__ = ["main", "parse", "build_parser", "entry"]
