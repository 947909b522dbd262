"""The ``tlres`` command: ``tlres VERB [ARGS...]`` (or ``python -m tlres VERB ...``).

Each verb is one of tlres' commands under a short name; ``tlres VERB --help``
shows its flags. The ``python -m tlres.<module>`` forms keep working.
"""

import importlib
import sys

# verb -> (module, how its main is called, one-line summary); modules are imported only when used
VERBS = {
    "train": ("tlres.commands.train", "main", "train and evaluate one run (--preset NAME; --data DIR: your images)"),
    "predict": ("tlres.commands.predict", "main", "label images (files, folders, an .npz) with a run's model.keras"),
    "ablation": ("tlres.commands.ablation", "main", "run the improvements on and off over seeds (a grid of runs)"),
    "report": ("tlres.commands.report", "main", "tables, figures and intervals from finished runs and grids"),
    "compare": ("tlres.commands.compare", "main", "compare results side by side (runs, results files)"),
    "results": ("tlres.commands.results", "main", "export and convert results files"),
    "bench": ("tlres.commands.bench", "main", "time training and inference steps on synthetic data"),
    "crosscheck": ("tlres.commands.crosscheck", "main",
                   "train the same recipe in PyTorch and Keras and compare them"),
    "torch": ("tlres.commands.torch", "main", "the PyTorch reference runner (needs torch)"),
    "parity": ("tlres.commands.parity", "main",
               "per-step training losses, Keras against PyTorch, from the same weights and batches"),
}


def usage():
    width = max(map(len, VERBS))
    lines = ["usage: tlres VERB [ARGS...]   (tlres VERB --help for a verb's flags)", "", "verbs:"]
    lines += [f"  {verb:<{width}}  {summary}" for verb, (_, _, summary) in VERBS.items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        (sys.stdout if argv else sys.stderr).write(usage())
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"tlres: error: unknown verb {verb!r}; choose one of: {', '.join(VERBS)} "
              "(see tlres --help)", file=sys.stderr)
        return 2
    module, func, _ = VERBS[verb]
    prog = f"tlres {verb}"
    command = importlib.import_module(module)
    if func == "train":
        return command.main("improved", rest, prog)
    return getattr(command, func)(rest, prog=prog)


if __name__ == "__main__":
    sys.exit(main())
