"""`tlres crosscheck`: the same config and seeds in tlres and the PyTorch reference, compared
(`tlres.reference.crosscheck.run`)."""

from tlres.commands import cli
from tlres.core import config as config_lib
from tlres.reference import crosscheck


def parse(argv, prog=crosscheck.PROG):
    """(the command's own flags, the Config overrides: the digits defaults, then the tlres flags given)."""
    p = cli.Parser(prog=prog, description=crosscheck.__doc__.split("\n")[0])
    p.add_argument("--seeds", type=cli.positive(int), default=3,
                   help="runs per framework, seeds --seed, --seed+1, ... (default: 3)")
    p.add_argument("--out", required=True, help="directory: pytorch/, compare.md, compare.png")
    p.add_argument("--tlres-grid", help="the tlres grid directory (default OUT/keras-jax)")
    p.add_argument("--device", default=None, help="torch device for the PyTorch side")
    p.add_argument("--no-train-tlres", action="store_true",
                   help="compare against finished tlres runs only; train none")
    p.add_argument("--torch-only", action="store_true", help="run the PyTorch side only")
    p.add_argument("--readme", metavar="FILE", help="also write the comparison (without the "
                   f"confusion differences) into FILE between {crosscheck.BEGIN} and {crosscheck.END}")
    p.add_argument("--torch-weights", metavar="WEIGHTS", help="what the PyTorch side loads when "
                   "--weights names a run or file (Keras' ResNet50 is v1, torchvision's v1.5: each "
                   "side needs its own pretraining): a finished PyTorch reference run or a .pt/.pth")
    p.add_argument("--section", metavar="NAME", help="with --readme: write between "
                   "<!-- tlres.crosscheck:NAME:begin --> and its end marker instead")
    p.add_argument("--init", choices=("tlres", "own"), default="tlres",
                   help="tlres: per seed, the PyTorch run starts from tlres' initial weights for "
                        "that seed, head included; own: each framework initialises its own model "
                        "(default: tlres)")
    p.add_argument("--draws", choices=("tlres", "torch"), default="tlres",
                   help="the PyTorch side's augmentation draws: tlres' batches, draw for draw, or "
                        "torchvision's transforms (default: tlres; --randaugment, --mixup and "
                        "--cutmix need torch)")
    cli.add_debug(p)
    args, rest = p.parse_known_args(argv)
    given = {a.split("=")[0] for a in rest if a.startswith("--")}
    bad = sorted(given & {"--preset", "--resume", "--overwrite"})
    if bad:
        p.error(f"{', '.join(bad)}: not taken here (the improved cell with the digits overrides)")
    cfg, _ = cli.parse_all(rest, "improved", prog)  # validates the tlres flags, one line on error
    digits = config_lib.get_config(runlocal=True, use="grid")
    return args, {**digits, "arch": "resnet50_v1_5", **cli.given_fields(cfg, rest)}


def main(argv=None, prog=crosscheck.PROG):
    argv = cli.command_line(argv)
    args, overrides = parse(argv, prog)
    return cli.guarded(prog, args.debug, lambda: crosscheck.run(
        args.out, overrides, args.seeds, args.tlres_grid, args.device, args.no_train_tlres, args.torch_only,
        args.readme, args.torch_weights, args.section, args.init, args.draws,
        command=f"{crosscheck.PROG} {' '.join(argv)}"))
