"""Every command's argparse pieces: the runner's parser generated from `tlres.core.config.Config`, the
argument checks, and the one error path (`guarded`). The commands themselves are `tlres.commands`.

    tlres train [--preset NAME] [--FLAG VALUE ...]

The preset (default: the entry point's) supplies every default; any flag given
overrides it, wherever it stands. `--help` shows the preset's values.
Errors a user can fix print one line and exit 2; `--debug` shows tracebacks.
"""

import argparse
import dataclasses
import sys

from tlres.core import config as config_lib
from tlres.core.errors import TlresError
from tlres.net import weights as weights_lib


class Parser(argparse.ArgumentParser):
    """Every tlres command's argument parser: no prefixes, one-line errors."""

    def __init__(self, *args, **kwargs):  # no prefixes: a typo like --epoch must not pass as --epochs
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):  # one line, exit 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class DefaultsHelp(argparse.HelpFormatter):
    """Help that shows each flag's default once, as "(default: X)".

    Not where the help text states its own "(default: ...)", not for a default of None
    (the flag is simply not used) and not for plain switches (off unless given); a
    --X/--no-X pair names the one that is on by default.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or "%(default)" in text or action.default in (None, argparse.SUPPRESS):
            return text
        if isinstance(action, argparse.BooleanOptionalAction):
            on, off = action.option_strings[:2]
            return f"{text} (default: {on if action.default else off})"
        if action.nargs == 0:  # store_true / store_false / help
            return text
        return f"{text} (default: %(default)s)"


def add_debug(parser, **kwargs):
    """Every command's `--debug`: tracebacks instead of one-line errors (`guarded`)."""
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors", **kwargs)


def checked(kind, ok, rule):
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


def positive(kind):
    """An argparse type: a `kind` number > 0."""
    return checked(kind, lambda v: v > 0, "must be positive")


def _weights(text):
    """--weights: "none" in any letter case is random initialisation, recorded as "none"."""
    return weights_lib.canonical(text)


_weights.__name__ = "str"  # argparse names the type in its messages: the field's own kind


def field_type(f):
    """A field's argparse type: its kind, checked against `config.RULES` (one definition of each range)."""
    if f.name == "weights":
        return _weights
    kind = f.metadata.get("type") or (type(f.default) if f.default is not None else str)
    if f.name in config_lib.RULES:
        return checked(kind, *config_lib.RULES[f.name])
    return kind


def build_parser(prog, defaults, presets):
    p = Parser(prog=prog, description=("Train and evaluate the paper's transfer-learning ResNet50 recipe "
                             "(Keras 3 on JAX). The preset supplies every default shown; "
                             "any flag overrides it."),
                formatter_class=DefaultsHelp)
    p.add_argument("--preset", choices=sorted(presets), default=defaults.preset,
                   help="start from this preset; any other flag overrides it")
    add_debug(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run directory at --out (only one tlres wrote)")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue a killed, interrupted or failed run from its last checkpoint (an "
                        "epoch's end, or a step within one), with the settings in RUN_DIR/config.json "
                        "(no other flags)")
    add_config_flags(p, defaults)
    return p


def add_config_flags(parser, defaults, names=None, given_only=False):
    """Add to `parser` one flag per field of `defaults` (a Config) but `preset`, or per field in
    `names`: the field's help text, type, check and choices (and its const: the value the flag
    given alone takes); default `defaults`' value, or, with `given_only`, no attribute at all
    unless the flag is given (overrides of something else)."""
    for f in dataclasses.fields(defaults):
        if f.name == "preset" or (names is not None and f.name not in names):
            continue
        flag = "--" + f.name.replace("_", "-")
        value = argparse.SUPPRESS if given_only else getattr(defaults, f.name)
        helptext = f.metadata.get("help", "")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, help=helptext)
        else:
            optional = {} if f.metadata.get("const") is None else {"nargs": "?", "const": f.metadata["const"]}
            parser.add_argument(flag, type=field_type(f), default=value, choices=f.metadata.get("choices"),
                                help=helptext, **optional)  # optional: the flag alone gives its const


RUN_FLAGS = {"--debug", "--resume"} | {"--" + f.replace("_", "-") for f in config_lib.DISTRIBUTED}
"""The only flags allowed with --resume: how this process joins the others is its own."""


def parse(argv, default_preset, prog):
    """(Config, debug) for `argv`; see `parse_all` for --overwrite and --resume."""
    cfg, args = parse_all(argv, default_preset, prog)
    return cfg, args.debug


def parse_all(argv, default_preset, prog, build=None, no_resume=None):
    """(Config, namespace) for `argv`: every command's one parse path from flags to a Config.

    The preset (--preset, else `default_preset`) supplies every default; any flag given overrides
    it. `build(preset's Config)` makes the parser (default: the runner's, `build_parser`). With
    --resume the Config is None and only `RUN_FLAGS` may be given; `no_resume`, for a command that
    cannot resume, is its one-line refusal instead.
    """
    base = config_lib.PRESETS[_preset_named(argv, default_preset, prog)]
    parser = build(base) if build else build_parser(prog, base, config_lib.PRESETS)
    args = parser.parse_args(argv)
    if args.resume is not None:
        if no_resume:
            parser.error(no_resume)
        extra = sorted({a.split("=")[0] for a in argv if a.startswith("--")} - RUN_FLAGS)
        if extra:
            parser.error(f"--resume takes every setting from RUN_DIR/config.json, so a resumed run "
                         f"cannot change; drop {', '.join(extra)}")
        return None, args
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(base) if f.name != "preset"}
    return base.replace(preset=args.preset, **values), args


def _preset_named(argv, default_preset, prog):
    """The preset `argv` names (--preset), else `default_preset`; an unknown one is one line, exit 2."""
    pre = Parser(add_help=False)
    pre.add_argument("--preset", default=default_preset)
    known, _ = pre.parse_known_args(argv)
    if known.preset not in config_lib.PRESETS:
        pre.prog = prog
        pre.error(f"argument --preset: invalid choice: {known.preset!r} "
                  f"(choose from {', '.join(sorted(config_lib.PRESETS))})")
    return known.preset


def given_fields(cfg, argv):
    """{field: value} of `cfg` for the Config flags `argv` actually gives (`--x`, `--x=v`,
    `--no-x`): the overrides a command that sets its own defaults must keep."""
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    out = {}
    for f in dataclasses.fields(cfg):
        flag = "--" + f.name.replace("_", "-")
        if flag in given or "--no-" + flag[2:] in given:
            out[f.name] = getattr(cfg, f.name)
    return out


def guarded(prog, debug, fn, interrupted="interrupted"):
    """Run a command body, every command's one error path.

    Returns fn's exit status when it returns an int, else 0; a TlresError prints one line
    (``prog: error: ...``) and returns its exit code, or re-raises with --debug;
    Ctrl-C prints ``prog: <interrupted>`` and returns 130; a run stopped by a signal
    (`tlres.run.preempt.Interrupted`) prints its own line, with the resume command, and
    returns 128 + the signal number.
    """
    try:
        status = fn()
        return status if isinstance(status, int) else 0
    except TlresError as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print(f"{prog}: {getattr(e, 'message', interrupted)}", file=sys.stderr)
        return getattr(e, "exit_code", 130)


def command_line(argv):
    """`argv` as given (a command called from Python), or with None the process' own command line."""
    return sys.argv[1:] if argv is None else argv


__all__ = ["command_line", "parse", "parse_all", "build_parser", "add_config_flags", "given_fields", "guarded", "DefaultsHelp",
           "Parser", "checked", "positive"]
