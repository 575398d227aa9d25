"""Segmentation losses: per-pixel losses, region losses, and their weighted combination.

Per-pixel losses return (loss f32[B,H,W], weight f32[B,H,W]) and the step reduces them with
weighted_mean. Region losses (Dice, Jaccard, Tversky, Lovasz) are not sums over pixels; they
return a scalar f32[]. Multi-class losses take logits f32[B,H,W,K] and labels i32[B,H,W];
binary ones take logits f32[B,H,W] (or [B,H,W,1]) and labels in {0, 1, ignore_index}.

Ignored pixels (label == ignore_index, or out of range) contribute neither loss nor gradient,
whatever their logits hold: their logits are replaced by zeros before any arithmetic, and the
loss there is exactly 0 (per-pixel) or masked out of every sum (region). All shapes are static,
so every function works under jit, vmap and grad; selection (OHEM, top-k, Lovasz) uses sorts,
not boolean indexing.

The functions live in jaxseg.pixel_losses and jaxseg.region_losses; this module registers
them (LOSSES, and `register` for plug-ins), names them all (jaxseg.losses.dice_loss, ...) and
combines them (combined_loss).
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp

from jaxseg import registry
from jaxseg.pixel_losses import (
    boundary_loss,
    cross_entropy,
    focal_loss,
    ohem_cross_entropy,
    sigmoid_bce,
    topk_cross_entropy,
    weighted_mean,
)
from jaxseg.region_losses import (
    binary_dice_loss,
    dice_loss,
    focal_tversky_loss,
    jaccard_loss,
    lovasz_hinge,
    lovasz_softmax,
    tversky_loss,
)

LOSSES = {
    "ce": cross_entropy,
    "ohem": ohem_cross_entropy,
    "topk": topk_cross_entropy,
    "focal": focal_loss,
    "dice": dice_loss,
    "jaccard": jaccard_loss,
    "tversky": tversky_loss,
    "focal_tversky": focal_tversky_loss,
    "lovasz": lovasz_softmax,
    "bce": sigmoid_bce,
    "binary_dice": binary_dice_loss,
    "lovasz_hinge": lovasz_hinge,
    "boundary": boundary_loss,
}

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


def combined_loss(
    logits: jax.Array,
    labels: jax.Array,
    weights: dict[str, float],
    *,
    ignore_index: int = 255,
    class_weights: jax.Array | None = None,
    options: dict[str, dict] | None = None,
) -> jax.Array:
    """sum over names of weights[name] * LOSSES[name](logits, labels), each reduced to f32[].

    Args:
      logits: f32[B,H,W,K] (or the binary shape for "bce", "binary_dice", "lovasz_hinge").
      labels: i32[B,H,W].
      weights: loss name -> factor, e.g. {"ce": 1.0, "lovasz": 0.5}; every loss runs with its
        default options.
      class_weights: optional f32[K], passed to the losses that take it (ce, ohem, topk).
      options: loss name -> extra keyword options, e.g. {"ce": {"label_smoothing": 0.1}}.

    Returns:
      f32[] scalar.

    Raises:
      KeyError: a name is not in LOSSES; the message lists the valid names.
    """
    unknown = sorted(set(weights) - set(LOSSES))
    if unknown:
        raise KeyError(f"unknown loss name(s) {unknown}; valid names: {sorted(LOSSES)}")
    total = jnp.zeros((), jnp.float32)
    for name, factor in weights.items():
        kwargs = {"ignore_index": ignore_index}
        if class_weights is not None and takes(name, "class_weights"):
            kwargs["class_weights"] = class_weights
        kwargs.update((options or {}).get(name, {}))
        out = LOSSES[name](logits, labels, **kwargs)
        value = weighted_mean(*out) if isinstance(out, tuple) else out
        total = total + factor * value
    return total
