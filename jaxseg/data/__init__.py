"""Dataset registry: DATASETS maps a config name to a function building a split's source.
Each built-in dataset registers itself where it is defined (jaxseg.data.table.register), as
a plug-in does; importing this package imports every module in it, so a new dataset is one
new file.

A source is grain-compatible (len and getitem), yields
{"image": u8[H,W,C], "mask": u8 or i32[H,W]} and has a `class_names` tuple. Builders take
their options as keyword arguments with defaults; those are the config's data section.
"""

from __future__ import annotations

import importlib
import pkgutil

from jaxseg.data.membrane import MEMBRANE_ROOT
from jaxseg.data.table import DATASETS, SPLITS, SUPPLIED, make_source, options, register

__all__ = ["DATASETS", "MEMBRANE_ROOT", "SPLITS", "SUPPLIED", "make_source", "options", "register"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
