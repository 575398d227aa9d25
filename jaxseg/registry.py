"""The name -> part tables that built-in parts and plug-ins fill alike (jaxseg.models.MODELS,
jaxseg.data.DATASETS, jaxseg.losses.LOSSES), and the options a part declares in its own
signature: the dataclass fields of a model, the keyword arguments of a dataset builder or
a loss. A config section is built from those options (jaxseg.configs), so an option the
part does not take does not exist in the config.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys

from ml_collections import config_dict

# String annotations (modules use `from __future__ import annotations`) -> the type a
# config field holds when the default is None.
_ANNOTATED = {"float": float, "int": int, "str": str, "bool": bool}


def add(table: dict, kind: str, name: str, part) -> None:
    """table[name] = part; a name taken by another part raises ValueError naming both (the
    same part registered again, as when a plug-in module is imported twice, is fine)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} is registered under a non-empty string, got {name!r}")
    old = table.get(name)
    if old is not None and _where(old) != _where(part):
        raise ValueError(f"{kind} {name!r} is registered already, by {_where(old)}")
    table[name] = part


def lookup(table: dict, kind: str, name: str):
    """table[name]; an unknown name raises KeyError listing the valid ones."""
    if name not in table:
        raise KeyError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(table))}")
    return table[name]


def _where(part) -> str:
    return f"{part.__module__}.{part.__qualname__}"


def plugin(part) -> dict | None:
    """{"module", "path"} of the module that defined part when it is not jaxseg's own: what a
    later process imports (path on sys.path) to register it again; None for built-ins."""
    module = part.__module__
    if module == "jaxseg" or module.startswith("jaxseg."):
        return None
    file = getattr(sys.modules.get(module), "__file__", None)
    path = ""
    if file:  # the folder the top-level package or module sits in
        path = file
        for _ in range(module.count(".") + 1 + file.endswith("__init__.py")):
            path = path.rpartition("/")[0]
    return {"module": module, "path": path}


def config_value(owner: str, option: str, default, annotation):
    """A part option's default as a config value: lists become tuples; None becomes a typed
    placeholder (from the annotation) so the command line can still set it."""
    if isinstance(default, list):
        return tuple(default)
    if default is None:
        kind = _ANNOTATED.get(str(annotation).split("|")[0].strip())
        if kind is None:
            raise TypeError(
                f"{owner}: option {option!r} defaults to None without a float, int, str or "
                f"bool annotation; give it a typed default"
            )
        return config_dict.placeholder(kind)
    if not isinstance(default, bool | int | float | str | tuple):
        raise TypeError(
            f"{owner}: option {option!r} defaults to {default!r}; options take bool, int, "
            "float, str or tuple defaults"
        )
    return default


def keyword_options(fn, skip=()) -> dict:
    """{name: config default} of fn's keyword arguments (those after the first positional
    one), skipping `skip`; one without a default raises TypeError naming it."""
    owner = getattr(fn, "__qualname__", repr(fn))
    params = list(inspect.signature(fn).parameters.values())[1:]
    out = {}
    for p in params:
        if p.name in skip or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.default is p.empty:
            raise TypeError(f"{owner}: option {p.name!r} needs a default")
        out[p.name] = config_value(owner, p.name, p.default, p.annotation)
    return out


def field_options(cls, skip=()) -> dict:
    """{name: config default} of a dataclass's fields (a Flax module's), skipping `skip`
    and Flax's own parent and name; one without a default raises TypeError naming it."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in ("parent", "name", *skip):
            continue
        if f.default is dataclasses.MISSING:
            if f.default_factory is dataclasses.MISSING:
                raise TypeError(f"{cls.__qualname__}: field {f.name!r} needs a default")
            default = f.default_factory()
        else:
            default = f.default
        out[f.name] = config_value(cls.__qualname__, f.name, default, f.type)
    return out
