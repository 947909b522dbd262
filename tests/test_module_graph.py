"""The tlres module graph, read with `ast` (`if __name__ == "__main__":` blocks included): no import cycle,
imports only down the layers (LAYERS), no private name across modules, imports at module level.

Imported inside functions only: torch, torchvision, tensorflow, tensorflow_datasets, matplotlib, jax and
keras (optional, or seconds to import: `tlres VERB --help` and a one-line error must not wait for them),
scipy and sklearn (about 1 s each, for a few functions: intervals, the digits loader), and the tlres
modules that import one of these at module level (tlres.run.losses, tlres.run.schedules: keras).

Every other import of a tlres module or a third-party library stands at module level, so a module's
first lines say what it needs; the standard library may be imported where it is used.
"""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAZY = {"torch", "torchvision", "tensorflow", "tensorflow_datasets", "matplotlib", "jax", "jaxlib",
        "keras", "scipy", "sklearn"}
LAZY_MODULES = {"safetensors.torch"}  # safetensors' torch loader imports torch
KERAS_BOUND = {"tlres.run.losses", "tlres.run.schedules"}  # the tlres modules LAZY makes lazy (see above)


def _modules():
    """{dotted name: path} of every module of the tlres package."""
    out = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "tlres")):
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, f)
    return out


MODULES = _modules()


def _trees():
    out = {}
    for name, path in MODULES.items():
        with open(path) as f:
            out[name] = ast.parse(f.read(), path)
    return out


TREES = _trees()


def _package(module):
    return module if os.path.basename(MODULES[module]) == "__init__.py" else module.rpartition(".")[0]


def _is_main_block(node):
    """`if __name__ == "__main__":`"""
    t = node.test if isinstance(node, ast.If) else None
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == "__name__"
            and len(t.ops) == 1 and isinstance(t.ops[0], ast.Eq) and len(t.comparators) == 1
            and isinstance(t.comparators[0], ast.Constant) and t.comparators[0].value == "__main__")


def _imports(module, main_block=False):
    """(node, inside a function, [(imported dotted name, name bound here or None, the attribute
    imported from a module or None)]) for every import statement of `module`; those in a
    module-level `if __name__ == "__main__":` block only with `main_block`."""
    tree = TREES[module]
    inside, skipped = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    if not main_block:
        for node in tree.body:
            if _is_main_block(node):
                skipped.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [(a.name, a.asname or a.name.split(".")[0], None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package of `module`
                pkg = _package(module).split(".")
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            targets = []
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in MODULES:  # from tlres import train: the module tlres.run.train
                    targets.append((sub, a.asname or a.name, None))
                else:  # from tlres.run.train import run: the name `run` of tlres.run.train
                    targets.append((base, a.asname or a.name, a.name))
        else:
            continue
        yield node, id(node) in inside, targets


def _tlres(name):
    return name == "tlres" or name.startswith("tlres.")


def _graph():
    """{module: {imported tlres module: [line, ...]}}, function-level imports included."""
    graph = {m: {} for m in MODULES}
    for m in MODULES:
        for node, _, targets in _imports(m, main_block=True):
            for name, _, _ in targets:
                if _tlres(name) and name != m:
                    graph[m].setdefault(name, []).append(node.lineno)
    return graph


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _lazy_third_party(name):
    return name.split(".")[0] in LAZY or any(name == m or name.startswith(m + ".") for m in LAZY_MODULES)


def _keras_bound():
    """tlres modules whose module-level imports pull in a LAZY library (directly or through another)."""
    direct = {m: [n for node, fn, targets in _imports(m) if not fn for n, _, _ in targets] for m in MODULES}
    bound = set()
    changed = True
    while changed:
        changed = False
        for m, names in direct.items():
            if m not in bound and any(_lazy_third_party(n) or n in bound for n in names):
                bound.add(m)
                changed = True
    return bound


def test_no_import_cycle():
    graph = _graph()
    cycles = _cycles(graph)
    detail = ["; ".join(f"{a} -> {b} (line {graph[a][b][0]})" for a in comp for b in comp if b in graph[a])
              for comp in cycles]
    assert not cycles, "import cycles among tlres modules:\n" + "\n".join(detail)


def test_no_private_name_across_modules():
    bad = []
    for m in MODULES:
        aliases = {}  # a name bound to a tlres module anywhere in m -> that module
        for node, _, targets in _imports(m, main_block=True):
            for name, bound, attr in targets:
                if not _tlres(name):
                    continue
                if attr is None:
                    aliases[bound] = name if bound != name.split(".")[0] or "." not in name else "tlres"
                elif attr.startswith("_") and not attr.startswith("__") and name != m:
                    bad.append(f"{m}:{node.lineno} imports {name}.{attr}")
        for node in ast.walk(TREES[m]):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            chain, v = [], node.value
            while isinstance(v, ast.Attribute):
                chain.insert(0, v.attr)
                v = v.value
            if not isinstance(v, ast.Name) or v.id not in aliases:
                continue
            target = aliases[v.id]
            for part in chain:  # tlres.run.train._x: walk the dotted modules
                if f"{target}.{part}" in MODULES:
                    target = f"{target}.{part}"
                else:
                    target = None
                    break
            if target and target != m:
                bad.append(f"{m}:{node.lineno} uses {target}.{node.attr}")
    assert not bad, "private names used from another tlres module:\n" + "\n".join(bad)


def test_imports_stand_at_module_level():
    assert _keras_bound() == KERAS_BOUND, "update KERAS_BOUND and the docstring's list"
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = []
    for m in MODULES:
        for node, in_function, targets in _imports(m):
            if not in_function:
                continue
            for name, _, _ in targets:
                if _tlres(name):
                    if name not in KERAS_BOUND:
                        bad.append(f"{m}:{node.lineno} imports {name} inside a function")
                elif name.split(".")[0] not in stdlib and not _lazy_third_party(name):
                    bad.append(f"{m}:{node.lineno} imports {name} inside a function")
    assert not bad, "imports to move to module level:\n" + "\n".join(bad)


def test_commands_import_no_heavy_library():
    """What makes the lazy imports above worth having: every verb's module, imported as
    `tlres VERB --help` does, loads none of the lazy libraries."""
    from tlres.__main__ import VERBS, module_of

    code = ("import importlib, sys\n"
            f"for m in {sorted(module_of(verb) for verb in VERBS)!r}: importlib.import_module(m)\n"
            f"print(sorted({{k.split('.')[0] for k in sys.modules}} & set({sorted(LAZY)!r})))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"imported at module level by a command: {r.stdout.strip()}"


# The layers, bottom first: a module may import from its own layer and those below it, never above.
LAYERS = ("tlres", "tlres.core", "tlres.data", "tlres.net", "tlres.run", "tlres.analysis", "tlres.reference",
          "tlres.commands", "tlres.__main__", "tlres.experiments")


def _layer(module):
    """The index in LAYERS of the longest layer that holds `module`."""
    held = [i for i, layer in enumerate(LAYERS) if module == layer or module.startswith(layer + ".")]
    return max(held, key=lambda i: len(LAYERS[i]))


def test_every_module_is_in_a_layer_package():
    """The package's folders are its layers: no module sits loose beside them."""
    loose = [m for m in MODULES if _layer(m) == 0 and m != "tlres"]
    assert not loose, f"modules outside every layer: {loose}"
    for layer in LAYERS[1:]:
        if layer in MODULES:  # a package: its __init__ says its job in a few lines
            doc = ast.get_docstring(TREES[layer])
            assert doc and doc.count("\n") < 6, f"{layer}/__init__.py needs a short docstring"


def test_imports_only_go_down():
    """Every import, `if __name__ == "__main__":` blocks and function-level ones included."""
    up = [f"{a} -> {b} (line {lines[0]})" for a, edges in _graph().items() for b, lines in edges.items()
          if _layer(b) > _layer(a)]
    assert not up, "imports that run up the layers:\n" + "\n".join(up)


@pytest.mark.parametrize("example, expected", [
    ({"a": {"b": [1]}, "b": {"a": [2]}, "c": {}}, [["a", "b"]]),
    ({"a": {"b": [1]}, "b": {"c": [1]}, "c": {}}, []),
])
def test_cycle_finder(example, expected):
    assert _cycles(example) == expected
