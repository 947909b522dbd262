"""The command layer: one module per `tlres VERB`, each that verb's parser and a thin
`main(argv=None, prog=...)` over library calls; `tlres.__main__` dispatches to them.

The argparse pieces every command shares (the parser generated from `Config`, the checks,
the one error path `guarded`) are `tlres.commands.cli`. No library module parses a command line.
"""
