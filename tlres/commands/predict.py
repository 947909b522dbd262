"""`tlres predict MODEL INPUT...`: label new images with a run's model.keras (`tlres.run.predict.run`)."""

import argparse

from tlres.commands import cli
from tlres.run import predict


def parser(prog=predict.PROG):
    head, rest = predict.__doc__.partition("\n\n")[0], predict.HELP
    p = cli.Parser(prog=prog, description=head.split(": ")[0] + ".", epilog=rest,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a finished run's directory, or a .keras file")
    p.add_argument("inputs", metavar="INPUT", nargs="+",
                   help="image files, folders (searched recursively), or one .npz with x or x_test")
    p.add_argument("--out", default="predictions.csv", help="the CSV to write; - for stdout "
                   "(default: predictions.csv)")
    p.add_argument("--top-k", type=cli.positive(int), default=1,
                   help="also list the 2nd..Kth most likely classes and their probabilities")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip unreadable images (counted) instead of stopping")
    p.add_argument("--input-norm", choices=("paper", "caffe"), default=None,
                   help="for a .keras file without tlres' record only: the model's input normalization")
    p.add_argument("--batch-size", type=cli.positive(int), default=None,
                   help="default: the run's (which reproduces its predictions exactly), else 64")
    p.add_argument("--conv", choices=("auto", "xla", "matmul"), default=None,
                   help="convolution kernel; default: the run's setting")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    cli.add_debug(p)
    return p


def main(argv=None, prog=predict.PROG):
    a = parser(prog).parse_args(cli.command_line(argv))

    def go():
        predict.run(a.model, a.inputs, a.out, a.top_k, a.skip_bad_images, a.input_norm, a.batch_size,
                    a.conv, a.overwrite)

    return cli.guarded(prog, a.debug, go)
