"""LOSSES, the name -> loss function table, and `register`, which the built-in losses
(jaxseg.pixel_losses, jaxseg.region_losses) and plug-ins use alike. A loss's keyword-only
arguments with defaults are its options: the config's loss.<name> section."""

from __future__ import annotations

import inspect

from jaxseg import registry

LOSSES: dict = {}
# Keywords the step supplies itself, not options a user sets.
_SUPPLIED = frozenset({"ignore_index", "class_weights", "distance"})


def register(name: str):
    """Function decorator: LOSSES[name] = a loss `fn(logits f32[B,H,W,K], labels i32[B,H,W],
    *, ignore_index, <options with defaults>)` returning f32[] or a per-pixel pair (loss
    f32[B,H,W], weight f32[B,H,W]) that the step reduces with weighted_mean. Its options
    become the config's loss.<name> section; `class_weights` and `distance` keywords, when it
    has them, receive the run's class weights and the boundary distance maps."""

    def add(fn):
        options(fn)  # every option has a usable default
        registry.add(LOSSES, "loss", name, fn)
        return fn

    return add


def options(loss) -> dict:
    """{option: default} of a loss (a name of LOSSES or the function): its keyword-only
    arguments but those the step supplies (ignore_index, class_weights, distance)."""
    fn = registry.lookup(LOSSES, "loss", loss) if isinstance(loss, str) else loss
    owner = getattr(fn, "__qualname__", repr(fn))
    params = inspect.signature(fn).parameters.values()
    out = {}
    for p in params:
        if p.kind is not p.KEYWORD_ONLY or p.name in _SUPPLIED:
            continue
        if p.default is p.empty:
            raise TypeError(f"{owner}: option {p.name!r} needs a default")
        out[p.name] = registry.config_value(owner, p.name, p.default, p.annotation)
    return out


def takes(name: str, keyword: str) -> bool:
    """Whether LOSSES[name] takes `keyword` (class_weights, distance, ...)."""
    fn = registry.lookup(LOSSES, "loss", name)
    return keyword in inspect.signature(fn).parameters


def needs_distance(terms) -> bool:
    """Whether a term of `terms` ((name, weight) pairs) takes the boundary distance maps
    that the host pipeline makes after augmentation."""
    return any(takes(str(name), "distance") for name, _ in terms)
