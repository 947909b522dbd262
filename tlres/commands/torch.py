"""`tlres torch`: the PyTorch reference runner (`tlres.reference.torch.run`), with the runner's
flags (generated from `Config`) and the reference-only ones."""

import dataclasses

from tlres.commands import cli
from tlres.core import config as config_lib
from tlres.net import weights as weights_lib
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
                        "see identical batches)")
    g.add_argument("--init", metavar="FILE", default=None,
                   help="complete initial weights, head included (a .safetensors/.pt/.pth state "
                        "dict of this model's layout, e.g. a tlres model's, converted); loaded "
                        "after --weights")
    return parser


def parse(argv, prog=ref.PROG):
    """(Config, extras namespace) for argv, as `tlres.commands.cli.parse_all` resolves presets and flags."""
    pre = cli.Parser(add_help=False)
    pre.add_argument("--preset", default="improved")
    known, _ = pre.parse_known_args(argv)
    if known.preset not in config_lib.PRESETS:
        pre.prog = prog
        pre.error(f"argument --preset: invalid choice: {known.preset!r} "
                  f"(choose from {', '.join(sorted(config_lib.PRESETS))})")
    parser = build_parser(known.preset, prog)
    args = parser.parse_args(argv)
    if args.resume is not None:
        parser.error("--resume is not supported by the PyTorch reference; rerun with --overwrite")
    base = config_lib.PRESETS[args.preset]
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(base) if f.name != "preset"}
    values["weights"] = weights_lib.canonical(values["weights"])
    return base.replace(preset=args.preset, **values), args


def main(argv=None, prog=ref.PROG):
    argv = cli.command_line(argv)
    cfg, args = parse(argv, prog)
    return cli.guarded(prog, args.debug, lambda: ref.run(cfg, args.limit_train, args.limit_test,
                                                         args.device, overwrite=args.overwrite,
                                                         draws=args.draws, init=args.init))
