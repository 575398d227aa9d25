"""MODELS, the name -> Flax module table, and `register`, which built-in models and plug-ins
use alike:

    @jaxseg.models.register("tinynet")
    class TinyNet(nn.Module):
        num_classes: int
        dtype: Any = jnp.float32
        width: int = 8  # every other field has a default: it becomes model.width

        @nn.compact
        def __call__(self, x, train: bool = False):  # x: f32[B,H,W,C]
            ...
            return logits, {}  # f32[B,H,W,K] at input size, aux outputs by name

The config's model section is the module's fields with their defaults (jaxseg.configs).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from jaxseg import registry

MODELS: dict[str, type[nn.Module]] = {}
# Fields every model has that the config does not set as options: the run supplies them.
SUPPLIED = ("num_classes", "dtype")


def register(name: str):
    """Class decorator: MODELS[name] = the module. It must be a flax.linen.Module with fields
    num_classes and dtype; every other field needs a default (it is a config option)."""

    def add(module):
        if not (isinstance(module, type) and issubclass(module, nn.Module)):
            raise TypeError(f"model {name!r}: register a flax.linen.Module class, got {module!r}")
        fields = {f.name for f in dataclasses.fields(module)}
        missing = [f for f in SUPPLIED if f not in fields]
        if missing:
            raise TypeError(f"model {name!r} ({module.__qualname__}) needs field(s) {missing}")
        registry.field_options(module, skip=SUPPLIED)  # every option has a usable default
        registry.add(MODELS, "model", name, module)
        return module

    return add


def options(name: str) -> dict:
    """{option: default} of model `name`: its fields but num_classes and dtype."""
    return registry.field_options(registry.lookup(MODELS, "model", name), skip=SUPPLIED)


def build_model(name: str, num_classes: int, *, dtype: str = "float32", **options) -> nn.Module:
    """MODELS[name](num_classes, dtype, **options); an unknown name lists the valid ones, an
    option the model does not take raises TypeError naming it."""
    module = registry.lookup(MODELS, "model", name)
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    return module(num_classes=num_classes, dtype=jnp.dtype(dtype), **options)
