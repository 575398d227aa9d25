"""Dataset registry: DATASETS maps a config name to a function building a split's source.
Each built-in dataset registers itself where it is defined (jaxseg.data.table.register), as
a plug-in does; importing this package imports them all.

A source is grain-compatible (len and getitem), yields
{"image": u8[H,W,C], "mask": u8 or i32[H,W]} and has a `class_names` tuple. Builders take
their options as keyword arguments with defaults; those are the config's data section.
"""

from __future__ import annotations

from jaxseg.data import folder, shapes, tfds_source  # noqa: F401 (registers the built-ins)
from jaxseg.data.folder import MEMBRANE_ROOT
from jaxseg.data.table import DATASETS, SPLITS, SUPPLIED, make_source, options, register

__all__ = ["DATASETS", "MEMBRANE_ROOT", "SPLITS", "SUPPLIED", "make_source", "options", "register"]
