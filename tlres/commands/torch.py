"""`tlres torch`: the PyTorch reference runner (`tlres.reference.torch.run`), with the runner's
flags (generated from `Config`) and the reference-only ones."""

from tlres.commands import cli
from tlres.core import config as config_lib
from tlres.reference import torch as ref


def build_parser(preset="improved", prog=ref.PROG):
    parser = cli.build_parser(prog, config_lib.PRESETS[preset], config_lib.PRESETS)
    parser.description = ("The paper's recipe in PyTorch/torchvision on tlres' data; the same flags "
                          "as tlres (generated from tlres.core.config.Config) plus reference-only extras.")
    g = parser.add_argument_group("reference-only")
    g.add_argument("--limit-train", type=cli.positive(int),
                   help="use only the first N training images (tests)")
    g.add_argument("--limit-test", type=cli.positive(int),
                   help="use only the first N test images (tests)")
    g.add_argument("--device", default=None,
                   help="torch device: cpu, cuda, cuda:K (default: cuda if available, else cpu)")
    g.add_argument("--draws", choices=("torch", "tlres"), default="torch",
                   help="augmentation draws: torch (torchvision transforms, torch's generator) or "
                        "tlres (the batches of tlres' --pipeline jax, draw for draw: both frameworks "
                        "see identical batches; flips and crops only, so not with --randaugment, "
                        "--mixup or --cutmix)")
    g.add_argument("--init", metavar="FILE", default=None,
                   help="complete initial weights, head included (a .safetensors/.pt/.pth state "
                        "dict of this model's layout, e.g. a tlres model's, converted); loaded "
                        "after --weights")
    return parser


def parse(argv, prog=ref.PROG):
    """(Config, extras namespace) for argv: the one parse path (`tlres.commands.cli.parse_all`) with
    this command's parser."""
    return cli.parse_all(argv, "improved", prog, build=lambda base: build_parser(base.preset, prog),
                         no_resume="--resume is not supported by the PyTorch reference; rerun with "
                                   "--overwrite")


def main(argv=None, prog=ref.PROG):
    argv = cli.command_line(argv)
    cfg, args = parse(argv, prog)
    return cli.guarded(prog, args.debug, lambda: ref.run(cfg, args.limit_train, args.limit_test,
                                                         args.device, overwrite=args.overwrite,
                                                         draws=args.draws, init=args.init))
