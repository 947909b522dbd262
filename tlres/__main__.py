"""The ``tlres`` command: ``tlres VERB [ARGS...]`` (or ``python -m tlres VERB ...``), the one way in.

Each verb is a module of `tlres.commands` (``tlres.commands.VERB``), imported only when
used; ``tlres VERB --help`` shows its flags. A command started from a shell first gets the
faster allocator (`tlres.net.cpu.allocator`), which may start the process again.
"""

import importlib
import sys

from tlres.net.cpu import allocator

# verb -> one-line summary; the verb's command is tlres.commands.<verb>, imported only when used
VERBS = {
    "train": "train and evaluate one run (--preset NAME; --data DIR: your images)",
    "predict": "label images (files, folders, an .npz) with a run's model.keras",
    "export": "a run's model as ONNX, a TensorFlow SavedModel or LiteRT, normalization inside",
    "ablation": "run the improvements on and off over seeds (a grid of runs)",
    "report": "tables, figures and intervals from finished runs and grids",
    "compare": "compare results side by side (runs, results files)",
    "results": "export and convert results files",
    "bench": "time training and inference steps on synthetic data",
    "crosscheck": "train the same recipe in PyTorch and Keras and compare them",
    "torch": "the PyTorch reference runner (needs torch)",
    "parity": "per-step training losses, Keras against PyTorch, from the same weights and batches",
}


def module_of(verb):
    """The module holding `verb`'s parser and main."""
    return f"tlres.commands.{verb}"


def usage():
    width = max(map(len, VERBS))
    lines = ["usage: tlres VERB [ARGS...]   (tlres VERB --help for a verb's flags)", "", "verbs:"]
    lines += [f"  {verb:<{width}}  {summary}" for verb, summary in VERBS.items()]
    return "\n".join(lines) + "\n"


def own_command_line():
    """The process' own arguments, once the allocator restart (if any) has happened."""
    allocator.restart_with_fast_allocator()
    return sys.argv[1:]


def main(argv=None):
    """`tlres VERB ...`; with argv None the process' own command line (`own_command_line`)."""
    argv = list(own_command_line() if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        (sys.stdout if argv else sys.stderr).write(usage())
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"tlres: error: unknown verb {verb!r}; choose one of: {', '.join(VERBS)} "
              "(see tlres --help)", file=sys.stderr)
        return 2
    return importlib.import_module(module_of(verb)).main(rest, prog=f"tlres {verb}")


def preset_main(preset):
    """`python -m tlres.experiments.PRESET [flags]`: `tlres train` with that preset's defaults."""
    train = importlib.import_module(module_of("train"))
    return train.main(own_command_line(), prog=f"python -m tlres.experiments.{preset}", preset=preset)


if __name__ == "__main__":
    sys.exit(main())
