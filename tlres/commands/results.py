"""`tlres results export|convert`: write results files (`tlres.analysis.results`)."""

from tlres.analysis import results
from tlres.commands import cli
from tlres.run import writes
from tlres.core.errors import TlresError


def parser(prog=results.PROG):
    """`export RUN_DIR --out FILE` and `convert --history H --predictions P --framework NAME --out FILE`."""
    p = cli.Parser(prog=prog, description=f"Write results files (schema {results.SCHEMA}).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=cli.Parser)
    e = sub.add_parser("export", help="a tlres (or tlres.reference.torch) run directory -> results JSON")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--out", required=True, help="results JSON to write")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    c = sub.add_parser("convert", help="another framework's CSV history and predictions -> results JSON")
    c.add_argument("--history", required=True, help="CSV with at least an epoch column")
    c.add_argument("--predictions", required=True, help="CSV with index,label,prediction")
    c.add_argument("--framework", required=True, help="e.g. pytorch, tensorflow, jax-flax")
    c.add_argument("--device", help="free-form device description")
    c.add_argument("--dataset", help="dataset name, e.g. digits, cifar10")
    c.add_argument("--class-names", help="comma-separated class names, in label order")
    c.add_argument("--name", help="label of this result (default: the framework)")
    c.add_argument("--out", required=True, help="results JSON to write")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    for q in (e, c):
        cli.add_debug(q)
    return p


def main(argv=None, prog=results.PROG):
    args = parser(prog).parse_args(cli.command_line(argv))

    def go():
        writes.output(args.out, args.overwrite)
        if args.command == "export":
            result = results.from_run_dir(args.run_dir)
        else:
            names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
            result = results.from_csv(args.history, args.predictions, args.framework, args.device,
                                      args.dataset, names, args.name)
        try:
            results.write(result, args.out)
        except OSError as err:
            raise TlresError(f"--out {args.out}: cannot write it ({err.strerror})") from None
        m = result["metrics"]
        print(f"{args.out}: {result['name']} ({result['framework']['name']}), accuracy "
              f"{m['accuracy']:.4f} on {m['num_test']} test examples")

    return cli.guarded(prog, args.debug, go)
