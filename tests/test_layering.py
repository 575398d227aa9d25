"""Entry points (train, benchmark, benchmark_input, aot, evaluate, predict, export, pack) import
library modules only, never each other; what two entries share lives in a library module
(recipe, inference, benchmark_steps)."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRIES = {
    "jaxseg.train",
    "jaxseg.benchmark",
    "jaxseg.benchmark_input",
    "jaxseg.aot",
    "jaxseg.evaluate",
    "jaxseg.predict",
    "jaxseg.export",
    "jaxseg.pack",
}


def _modules():
    package = os.path.join(ROOT, "jaxseg")
    for dirpath, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), path


def imported(path: str) -> set[str]:
    """Dotted names a module imports, `from a import b` counted as a.b as well as a."""
    names = set()
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_no_module_imports_an_entry_point():
    found = {}
    for module, path in _modules():
        bad = sorted(imported(path) & (ENTRIES - {module}))
        if bad:
            found[module] = bad
    assert not found, f"modules importing entry points: {found}"


def test_the_walk_sees_every_entry_and_catches_an_import(tmp_path):
    modules = dict(_modules())
    assert set(modules) >= ENTRIES
    assert "jaxseg.recipe" in modules and "jaxseg.inference" in modules
    bad = tmp_path / "bad.py"
    bad.write_text("from jaxseg import train\nfrom jaxseg.evaluate import main\n")
    assert imported(str(bad)) & ENTRIES >= {"jaxseg.train", "jaxseg.evaluate"}
