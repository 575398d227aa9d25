"""Model registry: MODELS maps a config name to a Flax module class. Each built-in model
registers itself where it is defined (jaxseg.models.table.register), as a plug-in does;
importing this package imports every module in it, so a new model is one new file."""

from __future__ import annotations

import importlib
import pkgutil

from jaxseg.models.table import MODELS, build_model, options, register

__all__ = ["MODELS", "build_model", "options", "register"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
