"""`tlres train`: train and evaluate one run (`tlres.run.train.run`), or resume one.

    tlres train [--preset NAME] [--FLAG VALUE ...]
    python -m tlres.experiments.improved ...   (and .baseline: the same, with that preset's defaults)
"""

from tlres.commands import cli
from tlres.run import distributed, rundir, train
from tlres.core import config as config_lib


def main(argv=None, prog=None, preset="improved"):
    argv = cli.command_line(argv)
    prog = prog or f"python -m tlres.experiments.{preset}"
    cfg, args = cli.parse_all(argv, preset, prog)

    def go():
        if args.resume is not None:
            joins = {f: getattr(args, f) for f in config_lib.DISTRIBUTED}
            train.run(rundir.resumed_config(args.resume).replace(**joins), resume=True)
        else:
            train.run(cfg, overwrite=args.overwrite)

    code = cli.guarded(prog, args.debug, go)
    distributed.finish(code)  # several processes and a failure: exit now, not at a shutdown barrier
    return code

