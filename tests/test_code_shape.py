"""The package's code stays readable in pieces: no function in tlres/ longer than a screen, no
docstring longer than a few lines (the stories live in docs/), read with `ast`."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FUNCTION_LINES = 60  # def line to last line
MAX_DOCSTRING_LINES = 12


def _nodes():
    for folder, _, files in os.walk(os.path.join(ROOT, "tlres")):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    yield os.path.relpath(path, ROOT), node


def _length(node):
    return node.end_lineno - node.lineno + 1


def test_every_function_fits_on_a_screen():
    long = [f"{p}:{n.lineno} {n.name} ({_length(n)} lines)" for p, n in _nodes()
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and _length(n) > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_every_docstring_is_a_few_lines():
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)
    long = []
    for p, n in _nodes():
        doc = ast.get_docstring(n, clean=False) if isinstance(n, kinds) else None
        if doc and doc.count("\n") + 1 > MAX_DOCSTRING_LINES:
            long.append(f"{p}:{getattr(n, 'lineno', 1)} {getattr(n, 'name', 'module')} "
                        f"({doc.count(chr(10)) + 1} lines)")
    assert not long, f"docstrings over {MAX_DOCSTRING_LINES} lines:\n" + "\n".join(long)


def test_the_checks_see_a_long_function_and_a_long_docstring(tmp_path, monkeypatch):
    """The two checks can fail: a package with one of each is reported."""
    pkg = tmp_path / "tlres"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    doc = "\n".join(["line"] * (MAX_DOCSTRING_LINES + 1))
    (pkg / "m.py").write_text(f'"""{doc}"""\n\n\ndef f():\n{body}\n')
    monkeypatch.setattr(__import__(__name__), "ROOT", str(tmp_path))
    for check in (test_every_function_fits_on_a_screen, test_every_docstring_is_a_few_lines):
        try:
            check()
        except AssertionError as e:
            assert "tlres/m.py" in str(e)
        else:
            raise AssertionError(f"{check.__name__} passed a package that breaks it")
