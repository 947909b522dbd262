"""`tlres compare SOURCE...`: results side by side, with differences and their intervals (`tlres.analysis.compare`)."""

from tlres.analysis import compare
from tlres.commands import cli
from tlres.run import writes


def parser(prog=compare.PROG):
    p = cli.Parser(prog=prog, description="Compare results side by side: per-metric values and "
                   "differences with 95% intervals; McNemar, agreement and confusion difference on "
                   "shared test sets.")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="a run dir, a directory of runs (aggregated per cell name), a results JSON "
                        "file, or `paper` (two sides: baseline and improved, n=64)")
    p.add_argument("--markdown", metavar="PATH", help="also write the comparison as Markdown")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of the sides' accuracy and loss curves")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --markdown or --plot file")
    cli.add_debug(p)
    return p


def main(argv=None, prog=compare.PROG):
    args = parser(prog).parse_args(cli.command_line(argv))

    def go():
        for flag in ("markdown", "plot"):
            if getattr(args, flag):
                writes.output(getattr(args, flag), args.overwrite, f"--{flag}")
        sides = compare.all_sides(args.sources)
        report = compare.compare(sides)
        print(compare.text(report), end="")
        if args.markdown:
            compare.write_markdown(report, args.markdown)
        if args.plot:
            compare.plot(sides, args.plot)

    return cli.guarded(prog, args.debug, go)
