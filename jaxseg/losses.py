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

The functions live in jaxseg.pixel_losses and jaxseg.region_losses, each registered where it
is defined (jaxseg.loss_table.register, as a plug-in registers); this module imports them
all, names them (jaxseg.losses.dice_loss, ...) and combines them (combined_loss).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg.loss_table import LOSSES, needs_distance, options, register, takes
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

__all__ = [
    "LOSSES",
    "binary_dice_loss",
    "boundary_loss",
    "combined_loss",
    "cross_entropy",
    "dice_loss",
    "focal_loss",
    "focal_tversky_loss",
    "jaccard_loss",
    "lovasz_hinge",
    "lovasz_softmax",
    "needs_distance",
    "ohem_cross_entropy",
    "options",
    "register",
    "sigmoid_bce",
    "takes",
    "topk_cross_entropy",
    "tversky_loss",
    "weighted_mean",
]


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
