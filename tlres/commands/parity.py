"""`tlres parity`: per-step training losses, Keras against PyTorch, from the same weights and batches,
recorded with their bound (`tlres.reference.parity.record`)."""

from tlres.commands import cli
from tlres.core import config as config_lib
from tlres.reference import parity


def parse(argv, prog=parity.PROG):
    """(the command's own flags, the Config: parity's defaults, then the tlres flags given, those overrides)."""
    p = cli.Parser(prog=prog, description=parity.__doc__.split("\n")[0])
    p.add_argument("--steps", type=cli.positive(int),
                   default=100, help="training steps per seed (default: 100)")
    p.add_argument("--seeds", type=cli.positive(int), default=3,
                   help="seeds --seed, --seed+1, ... (default: 3)")
    p.add_argument("--out", required=True, help="directory: seed<k>.csv, parity.png, summary.md")
    p.add_argument("--readme", metavar="FILE",
                   help="also write the summary into FILE between its tlres.parity markers")
    cli.add_debug(p)
    args, rest = p.parse_known_args(argv)
    given = {a.split("=")[0] for a in rest if a.startswith("--")}
    bad = sorted(given & {"--preset", "--resume", "--overwrite", "--out"})
    if bad:
        p.error(f"{', '.join(bad)}: not taken here")
    cfg, _ = cli.parse_all(rest, "improved", prog)
    overrides = cli.given_fields(cfg, rest)
    cfg = cfg.replace(**{**config_lib.get_config(runlocal=True, use="parity"), **overrides})
    if cfg.arch == "resnet50":
        p.error("--arch resnet50 is Keras' ResNet v1, which has no PyTorch twin: use resnet50_v1_5 or tiny")
    return args, cfg, overrides


def main(argv=None, prog=parity.PROG):
    argv = cli.command_line(argv)
    args, cfg, _ = parse(argv, prog)
    return cli.guarded(prog, args.debug, lambda: parity.record(
        cfg, args.out, args.steps, args.seeds, args.readme, command=f"{parity.PROG} {' '.join(argv)}"))
