"""`tlres report SOURCE...`: the comparison tables, findings and figures (`tlres.analysis.report.write`)."""

from tlres.analysis import report
from tlres.commands import cli


def parser(prog=report.PROG):
    p = cli.Parser(prog=prog, description=report.__doc__.split("\n")[0].split(": ")[0])
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="run directory, directory of runs (a grid), or results file")
    p.add_argument("--out", help="where the table and figures go (default: FIRST_SOURCE/report)")
    p.add_argument("--readme", help="also write the generated section into this file, between "
                                    f"{report.BEGIN} and {report.END}")
    p.add_argument("--section", metavar="NAME", help="with --readme: write between "
                   "<!-- tlres.report:NAME:begin --> and its end marker instead (several generated "
                   "sections in one file)")
    p.add_argument("--no-paper", action="store_true", help="leave the paper's numbers out")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the report's files (summary.md, summary.csv, the figures) in --out")
    cli.add_debug(p)
    return p


def main(argv=None, prog=report.PROG):
    argv = cli.command_line(argv)
    a = parser(prog).parse_args(argv)

    def go():
        runs, groups, out, table = report.write(a.sources, a.out, a.readme, a.section, not a.no_paper,
                                                " ".join([report.PROG] + argv), a.overwrite)
        print(table, end="")
        print(f"{prog}: {len(runs)} runs in {len(groups)} groups -> {out}/summary.md, summary.csv, "
              "fig2_accuracy.png, fig3_loss.png, fig4_confusion.png"
              + (f"; README section in {a.readme}" if a.readme else ""))

    return cli.guarded(prog, a.debug, go)
