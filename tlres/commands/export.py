"""`tlres export RUN --format onnx|savedmodel|litert`: a run's model for serving (`tlres.run.export.export`)."""

import argparse

from tlres.commands import cli
from tlres.run import export
from tlres.core.errors import human


def parser(prog=export.PROG):
    head, _, rest = export.__doc__.partition("\n\n")
    p = cli.Parser(prog=prog, description=head.split(": ")[0] + ".", epilog=rest,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="a finished run's directory, or its model.keras")
    p.add_argument("--format", required=True, metavar="FORMAT", help=", ".join(export.FORMATS))
    p.add_argument("--out", default=None,
                   help="where to write it (default: RUN/export/model.onnx, savedmodel or model.tflite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    cli.add_debug(p)
    return p


def main(argv=None, prog=export.PROG):
    a = parser(prog).parse_args(cli.command_line(argv))

    def go():
        path, seconds, size = export.export(a.run, a.format, a.out, a.overwrite)
        print(f"{prog}: {a.format} ({human(size)}, {seconds:.1f} s) -> {path} "
              f"(inputs, normalization and class names: {path}.json)")

    return cli.guarded(prog, a.debug, go)
