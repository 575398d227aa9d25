"""Size limits of jaxseg/: no file over 500 lines, no function or method over 80 lines.

An exception names what it excuses and why. A temporary one is for code another change is
still shrinking; the test fails as soon as an excused file or function fits the limits again,
so the list cannot go stale."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80

# "path/to/file.py" excuses the file's length; "path/to/file.py:Class.function" a function's.
ALLOWED = {
    "jaxseg/configs.py:base_config": "the declarative list of every default, one per line "
    "(permanent)",
}


def _functions(tree, prefix=""):
    """(qualified name, line count) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = prefix + node.name
            if not isinstance(node, ast.ClassDef):
                yield name, node.end_lineno - node.lineno + 1
            yield from _functions(node, name + ".")
        else:
            yield from _functions(node, prefix)


def too_long(root: str = ROOT) -> dict[str, int]:
    """{file or file:function: lines} of everything under root/jaxseg over the limits."""
    found = {}
    for dirpath, _, files in os.walk(os.path.join(root, "jaxseg")):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            with open(path) as f:
                text = f.read()
            lines = len(text.splitlines())
            if lines > MAX_FILE_LINES:
                found[rel] = lines
            for function, length in _functions(ast.parse(text)):
                if length > MAX_FUNCTION_LINES:
                    found[f"{rel}:{function}"] = length
    return found


def test_files_and_functions_stay_short():
    over = {k: v for k, v in too_long().items() if k not in ALLOWED}
    assert not over, (
        f"over {MAX_FILE_LINES} lines a file or {MAX_FUNCTION_LINES} a function: {over}; "
        "split it (or, with a reason, add it to ALLOWED)"
    )


def test_every_exception_is_still_needed():
    stale = sorted(set(ALLOWED) - set(too_long()))
    assert not stale, f"within the limits now, remove from ALLOWED: {stale}"


def test_the_walk_finds_long_files_and_methods(tmp_path):
    package = tmp_path / "jaxseg"
    package.mkdir()
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (package / "a.py").write_text(f"class A:\n    def f(self):\n{body}")
    (package / "b.py").write_text("x = 1\n" * (MAX_FILE_LINES + 1))
    assert too_long(str(tmp_path)) == {
        "jaxseg/a.py:A.f": MAX_FUNCTION_LINES + 1,
        "jaxseg/b.py": 501,
    }
