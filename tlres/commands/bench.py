"""`tlres bench`: training, inference and pipeline throughput on synthetic data (`tlres.reference.bench.run`).

The runner's settings it takes (`bench.CONFIG_FLAGS`) are flags generated from `Config` by
`tlres.commands.cli`, as the runner's are; the rest are bench's own. Defaults: `bench.Settings`.
"""

import argparse
import dataclasses

from tlres.commands import cli
from tlres.reference import bench
from tlres.core.config import IMPROVED, RULES


def batch_sizes(text):
    """An argparse type: comma-separated positive integers."""
    try:
        sizes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(b <= 0 for b in sizes):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return sizes


batch_sizes.__name__ = "batch sizes"


def image_sizes(text):
    """An argparse type: comma-separated SIZE or SIZE:BATCH, e.g. 32:64,128:32,224:16."""
    size_ok, size_rule = RULES["image_size"]
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        size, _, batch = item.partition(":")
        try:
            point = (int(size), int(batch) if batch else None)
        except ValueError:
            point = None
        if point is None or not size_ok(point[0]) or (batch and point[1] <= 0):
            raise argparse.ArgumentTypeError(f"expected comma-separated SIZE or SIZE:BATCH (size {size_rule}, "
                                             f"batch positive), got {text!r}")
        out.append(point)
    if not out:
        raise argparse.ArgumentTypeError(f"expected comma-separated SIZE or SIZE:BATCH, got {text!r}")
    return tuple(out)


image_sizes.__name__ = "image sizes"


def parser(prog=bench.PROG):
    d = bench.Settings()
    p = cli.Parser(prog=prog, description=bench.__doc__.split("\n")[0], formatter_class=cli.DefaultsHelp)
    cli.add_config_flags(p, IMPROVED, names=bench.CONFIG_FLAGS)
    p.add_argument("--batch-sizes", type=batch_sizes, default=d.batch_sizes,
                   help="comma-separated (default: 64,256, the paper's batch and a larger one)")
    p.add_argument("--steps", type=cli.positive(int), default=d.steps, help="timed steps")
    p.add_argument("--warmup", type=cli.checked(int, lambda v: v >= 0, "must be >= 0"), default=d.warmup,
                   help="untimed steps after the first (compile) execution")
    p.add_argument("--steps-per-execution", type=cli.positive(int), default=d.steps_per_execution,
                   help="Keras compile(steps_per_execution=K): K train steps per fit iteration")
    p.add_argument("--pipeline-only", action="store_true", help="time the input pipeline only")
    p.add_argument("--conv-layers", action="store_true",
                   help="time each distinct convolution of the model with both kernels, only that")
    p.add_argument("--torch", action="store_true", help="also time torchvision's model in PyTorch")
    p.add_argument("--no-torch-compile", dest="torch_compile", action="store_false",
                   help="with --torch: eager only (torch.compile can take minutes on a CPU)")
    p.add_argument("--repeats", type=cli.positive(int), default=d.repeats,
                   help="measure each rate this many times: the table shows the median and min-max")
    p.add_argument("--image-sizes", metavar="SIZE[:BATCH],...", type=image_sizes, default=d.image_sizes,
                   help="sweep image sizes instead of --image-size: each framework in its own process, "
                        "recording its own peak RSS; SIZE alone runs each of --batch-sizes, "
                        "e.g. 32:64,32:256,128:32,224:16")
    p.add_argument("--profile", metavar="DIR",
                   help="write a JAX profiler trace of a few training steps per batch size here")
    p.add_argument("--json", metavar="PATH", dest="json_path", help="also write every figure as JSON here")
    cli.add_debug(p)
    return p


def main(argv=None, prog=bench.PROG):
    a = parser(prog).parse_args(cli.command_line(argv))
    settings = bench.Settings(**{f.name: getattr(a, f.name) for f in dataclasses.fields(bench.Settings)})
    return cli.guarded(prog, a.debug, lambda: bench.run(settings))
