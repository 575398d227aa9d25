"""Per-pixel losses. Each returns per-pixel values and per-pixel weights; the step reduces.

Ignored pixels (label == ignore_index) get weight 0 and a loss of exactly 0 computed
from a safe stand-in label, so they contribute neither loss nor gradient, whatever
their logits hold.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = 255,
    class_weights: jax.Array | None = None,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """Softmax cross-entropy per pixel.

    Args:
      logits: f32[B,H,W,K].
      labels: i32[B,H,W] class indices in [0, K) or ignore_index.
      class_weights: optional f32[K]; a pixel's weight is the weight of its label.
      label_smoothing: eps; the target is (1 - eps) * one_hot + eps / K.

    Returns:
      (loss f32[B,H,W], weight f32[B,H,W]); loss is 0 where weight is 0.
    """
    num_classes = logits.shape[-1]
    logits = logits.astype(jnp.float32)
    valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    safe = jnp.where(valid, labels, 0)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(axis=-1)
    weight = valid.astype(jnp.float32)
    if class_weights is not None:
        weight = weight * jnp.asarray(class_weights, jnp.float32)[safe]
    # where, not multiply: garbage logits at ignored pixels must not leak NaN/inf.
    return jnp.where(valid, nll, 0.0), weight


def weighted_mean(loss: jax.Array, weight: jax.Array) -> jax.Array:
    """sum(loss * weight) / sum(weight), and 0 (not NaN) when every weight is 0."""
    total = jnp.sum(weight)
    return jnp.sum(loss * weight) / jnp.maximum(total, jnp.finfo(jnp.float32).tiny)
