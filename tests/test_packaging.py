"""constraints.txt pins every dependency pyproject.toml declares (so .ci/run tests them)."""

import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_constraints_pin_every_declared_dependency():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    declared = {
        _name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]
    }
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        pinned = {_name(line) for line in f if re.match(r"^[A-Za-z0-9]", line) and "==" in line}
    assert declared <= pinned, sorted(declared - pinned)
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    assert "-c constraints.txt" in ci and "ruff check" in ci
