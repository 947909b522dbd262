"""`tlres ablation`: the grid of cells (each change on and off) over seeds, then its report
(`tlres.analysis.ablation`: the cells, the reuse rule, the grid runner)."""

import argparse
import dataclasses
import os

from tlres.analysis import ablation
from tlres.commands import cli
from tlres.run import writes
from tlres.commands import report
from tlres.core.config import IMPROVED
from tlres.core.errors import plural


def parse(argv, prog=ablation.PROG):
    """(out, seeds, cell names or None, overrides given on the command line, no-report flag, debug)."""
    p = cli.Parser(prog=prog, formatter_class=cli.DefaultsHelp, description=(
        "Run the ablation grid (baseline, improved, each change added to the baseline and removed "
        "from the improved preset) over seeds, reusing finished runs, then report it. Runner flags "
        "given here apply to every cell."))
    cli.add_debug(p, default=argparse.SUPPRESS)
    cli.add_config_flags(p, IMPROVED, given_only=True)  # only flags actually given become overrides
    p.add_argument("--seeds", type=cli.positive(int), default=1,
                   help="runs per cell, seeds --seed, --seed+1, ... (default 1)")
    p.add_argument("--cells", default=None,
                   help="comma-separated cells to run (default all): " + ", ".join(ablation.cells()))
    p.add_argument("--no-report", action="store_true", help="skip the report after the grid")
    p.add_argument("--transfer-from", metavar="WEIGHTS", default=None,
                   help="what the transfer cells load instead of ImageNet weights: a finished run "
                        "directory (its model.keras backbone), a .keras or a .weights.h5 file")
    p.add_argument("--option", metavar="NAME[=VALUE]", action="append", default=[],
                   help="add the cell improved+NAME: the improved preset with an option beyond the "
                        "paper, at VALUE or its default (repeatable): " + ", ".join(
                            f"{n} ({f}, default {v})" for n, (f, v) in ablation.OPTIONS.items()))
    args = vars(p.parse_args(argv))
    options = _options(p, args.pop("option"))
    if options:
        args["options"] = options
    out = args.pop("out", None)
    if not out:
        p.error("--out DIR is required: the grid's directory (DIR/<cell>/seed<k>/)")
    seeds, names, no_report = args.pop("seeds"), args.pop("cells"), args.pop("no_report")
    transfer_from = args.pop("transfer_from")
    if transfer_from is not None and "weights" in args:
        p.error("--weights sets every cell's initialisation; with --transfer-from (what the "
                "transfer cells load) drop --weights")
    debug = args.pop("debug", False)
    if names is not None:
        known = ablation.cells(options=options)
        names = [n.strip() for n in names.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            p.error(f"--cells: unknown {', '.join(unknown)} (choose from {', '.join(known)})")
    if transfer_from is not None:
        args["transfer_from"] = transfer_from
    return out, seeds, names, args, no_report, debug


def _options(parser, given):
    """{option name: value} of the --option flags, each value checked as its Config flag is."""
    fields = {f.name: f for f in dataclasses.fields(IMPROVED)}
    out = {}
    for text in given:
        name, _, value = text.partition("=")
        if name not in ablation.OPTIONS:
            parser.error(f"--option {text}: unknown option {name!r} (choose from "
                         f"{', '.join(ablation.OPTIONS)})")
        field, default = ablation.OPTIONS[name]
        try:
            out[name] = cli.field_type(fields[field])(value) if value else default
        except (argparse.ArgumentTypeError, ValueError) as e:
            parser.error(f"--option {text}: {e}")
    return out


def main(argv=None, prog=ablation.PROG):
    argv = cli.command_line(argv)
    out, seeds, names, overrides, no_report, debug = parse(argv, prog)

    def go():
        grid = ablation.cells(**overrides)  # transfer_from, if given, is among the overrides
        if names is not None:
            dropped = [n for n in names if n not in grid]
            if dropped:
                print(f"{prog}: {', '.join(dropped)} equal other cells under these flags; skipped")
        chosen = {n: c for n, c in grid.items() if names is None or n in names}
        ablation.check_weights(chosen)
        print(f"{prog}: {plural(len(chosen), 'cell')} x {plural(seeds, 'seed')} -> {out}: "
              f"{', '.join(chosen)}", flush=True)
        dirs, trained = ablation.run_grid(out, seeds, list(chosen), **overrides)
        print(f"{prog}: trained {plural(len(trained), 'run')}, reused "
              f"{sum(map(len, dirs.values())) - len(trained)}")
        if not no_report:
            folder = os.path.join(out, "report")  # its own from an earlier call: replaced
            return report.main([out, "--out", folder]
                               + (["--overwrite"] if writes.read_marker(folder) else []))

    return cli.guarded(prog, debug, go,
                       interrupted="interrupted; finished runs are kept and reused on the next call")
