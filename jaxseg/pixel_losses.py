"""Per-pixel losses: each returns (loss f32[B,H,W], weight f32[B,H,W]) that the step reduces
with weighted_mean (boundary_loss, a per-pixel sum, reduces itself to f32[]), and the input
preparation the region losses share (masked_probs, binary_inputs, safe_pow).

Multi-class losses take logits f32[B,H,W,K] and labels i32[B,H,W]; binary ones take logits
f32[B,H,W] (or [B,H,W,1]) and labels in {0, 1, ignore_index}. Ignored pixels (label ==
ignore_index, or out of range) contribute neither loss nor gradient, whatever their logits
hold: their logits are replaced by zeros before any arithmetic and the loss there is exactly
0. All shapes are static, so every function works under jit, vmap and grad; selection (OHEM,
top-k) uses sorts, not boolean indexing. jaxseg.losses registers them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg.loss_table import register


@register("ce")
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


# ---------------------------------------------------------------------------------------------
# Input preparation, shared with jaxseg.region_losses


def _valid(labels: jax.Array, num_classes: int, ignore_index: int) -> jax.Array:
    """bool[...]: pixels with a label in [0, num_classes) that is not ignore_index."""
    return (labels != ignore_index) & (labels >= 0) & (labels < num_classes)


def masked_probs(
    logits: jax.Array, labels: jax.Array, ignore_index: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Softmax probabilities and one-hot targets, both zeroed at ignored pixels.

    Returns (probs f32[B,H,W,K], target f32[B,H,W,K], valid bool[B,H,W]).
    """
    num_classes = logits.shape[-1]
    valid = _valid(labels, num_classes, ignore_index)
    # Replace, do not multiply: inf/NaN-producing garbage at ignored pixels must not reach
    # softmax, or its backward pass would give 0 * inf = NaN there.
    logits = jnp.where(valid[..., None], logits.astype(jnp.float32), 0.0)
    mask = valid[..., None].astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1) * mask
    target = jax.nn.one_hot(jnp.where(valid, labels, 0), num_classes, dtype=jnp.float32) * mask
    return probs, target, valid


def _ranks_descending(key: jax.Array) -> jax.Array:
    """i32[N]: position of each entry of key f32[N] in a stable descending sort."""
    order = jnp.argsort(-key, stable=True)
    return jnp.zeros(key.shape, jnp.int32).at[order].set(jnp.arange(key.size, dtype=jnp.int32))


def safe_pow(x: jax.Array, gamma: float) -> jax.Array:
    """max(x, 0) ** gamma with a zero (not NaN/inf) gradient at x == 0, also for gamma < 1."""
    x = jnp.maximum(x, 0.0)
    if gamma == 1.0:
        return x
    pos = x > 0
    return jnp.where(pos, jnp.where(pos, x, 1.0) ** gamma, 0.0)


# ---------------------------------------------------------------------------------------------
# Per-pixel multi-class losses: (loss f32[B,H,W], weight f32[B,H,W])


def _hardness(nll: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(nll without gradient, rank of each valid pixel from the hardest, i32[B,H,W]).

    Selection is not differentiated; ranking by nll is ranking by true-class probability,
    reversed. Ignored pixels rank last.
    """
    hard = jax.lax.stop_gradient(nll)
    ranks = _ranks_descending(jnp.where(valid, hard, -jnp.inf).reshape(-1)).reshape(nll.shape)
    return hard, ranks


@register("ohem")
def ohem_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = 255,
    thresh: float = 0.7,
    min_kept: int = 100_000,
    class_weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Online hard example mining cross-entropy (as in mmseg's OHEMPixelSampler).

    Keeps valid pixels whose true-class probability is below `thresh`, and in any case the
    `min_kept * B` hardest valid pixels of the batch (all valid pixels if there are fewer).

    Args:
      logits: f32[B,H,W,K]. labels: i32[B,H,W].
      thresh: probability threshold; pixels predicted at least this confidently are dropped.
      min_kept: hardest pixels kept per image, pooled over the batch.
      class_weights: optional f32[K], as in cross_entropy.

    Returns:
      (loss f32[B,H,W], weight f32[B,H,W]); weight is 0 on ignored and dropped pixels.
    """
    nll, weight = cross_entropy(
        logits, labels, ignore_index=ignore_index, class_weights=class_weights
    )
    valid = _valid(labels, logits.shape[-1], ignore_index)
    hard, ranks = _hardness(nll, valid)
    # p < thresh  <=>  nll > -log(thresh).
    keep = valid & ((hard > -jnp.log(thresh)) | (ranks < min_kept * labels.shape[0]))
    return nll, weight * keep.astype(jnp.float32)


@register("topk")
def topk_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = 255,
    k_percent: float = 0.1,
    class_weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy over the hardest ceil(k_percent * n_valid) valid pixels of the batch.

    Args:
      logits: f32[B,H,W,K]. labels: i32[B,H,W].
      k_percent: fraction in (0, 1] of the valid pixels to keep (0.1 keeps the hardest 10%).
      class_weights: optional f32[K], as in cross_entropy.

    Returns:
      (loss f32[B,H,W], weight f32[B,H,W]); weight is 0 on ignored and easier pixels.
    """
    nll, weight = cross_entropy(
        logits, labels, ignore_index=ignore_index, class_weights=class_weights
    )
    valid = _valid(labels, logits.shape[-1], ignore_index)
    _, ranks = _hardness(nll, valid)
    k = jnp.ceil(k_percent * jnp.sum(valid).astype(jnp.float32))
    # Ranks break ties by position, so exactly k pixels are kept.
    keep = valid & (ranks < k)
    return nll, weight * keep.astype(jnp.float32)


@register("focal")
def focal_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = 255,
    gamma: float = 2.0,
    alpha: tuple | jax.Array = (),
) -> tuple[jax.Array, jax.Array]:
    """Softmax focal loss (Lin et al. 2017): -alpha[y] * (1 - p_y) ** gamma * log p_y.

    Args:
      logits: f32[B,H,W,K]. labels: i32[B,H,W].
      gamma: focusing exponent, >= 0; 0 gives (alpha-weighted) cross-entropy.
      alpha: f32[K] per-class factors, or () for none (the config's loss.focal.alpha). It
        multiplies the loss, not the weight, so the mean stays over valid pixels as in the
        paper rather than renormalising by alpha.

    Returns:
      (loss f32[B,H,W], weight f32[B,H,W]); weight is 1 on valid pixels, 0 elsewhere.
    """
    num_classes = logits.shape[-1]
    valid = _valid(labels, num_classes, ignore_index)
    safe = jnp.where(valid, labels, 0)
    logits = jnp.where(valid[..., None], logits.astype(jnp.float32), 0.0)
    log_pt = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), safe[..., None], -1)[..., 0]
    loss = -log_pt
    if gamma:
        # -expm1(log p) keeps 1 - p accurate when p is close to 1.
        loss = safe_pow(-jnp.expm1(log_pt), gamma) * loss
    if alpha is not None and len(alpha):
        loss = loss * jnp.asarray(alpha, jnp.float32)[safe]
    return jnp.where(valid, loss, 0.0), valid.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Binary (one foreground class) on logits f32[B,H,W] or f32[B,H,W,1]


def binary_inputs(
    logits: jax.Array, labels: jax.Array, ignore_index: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (logits f32[B,H,W] zeroed at ignored pixels, target f32 in {0,1}, valid bool)."""
    if logits.ndim == labels.ndim + 1 and logits.shape[-1] == 1:
        logits = logits[..., 0]
    valid = _valid(labels, 2, ignore_index)
    logits = jnp.where(valid, logits.astype(jnp.float32), 0.0)
    target = jnp.where(valid, labels, 0).astype(jnp.float32)
    return logits, target, valid


@register("bce")
def sigmoid_bce(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = 255,
    pos_weight: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Binary cross-entropy on logits: -(pos_weight y log s(x) + (1 - y) log(1 - s(x))).

    Args:
      logits: f32[B,H,W] or f32[B,H,W,1]. labels: i32[B,H,W] in {0, 1, ignore_index}.
      pos_weight: factor on the foreground term.

    Returns:
      (loss f32[B,H,W], weight f32[B,H,W]).
    """
    x, y, valid = binary_inputs(logits, labels, ignore_index)
    # log s(x) = -softplus(-x), log(1 - s(x)) = -softplus(x): stable for large |x|.
    loss = pos_weight * y * jax.nn.softplus(-x) + (1.0 - y) * jax.nn.softplus(x)
    return jnp.where(valid, loss, 0.0), valid.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Boundary


@register("boundary")
def boundary_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    distance: jax.Array | None = None,
    ignore_index: int = 255,
) -> jax.Array:
    """Boundary loss (Kervadec et al. 2019): mean over valid pixels of sum_k p_k * phi_k.

    distance: f32[B,H,W,K] signed distance to each class's region, negative inside and
    positive outside (jaxseg.data.pipeline.signed_distance computes it on the host; 0 for a
    class absent from the image). Minimal when probability mass sits inside each region.
    Usually paired with a region loss, e.g. loss.terms = (("dice", 1.0), ("boundary", 0.01)).
    Returns f32[].
    """
    if distance is None:
        raise ValueError(
            "the boundary loss needs distance maps: the pipeline adds them to the batch "
            "when loss.terms names 'boundary'"
        )
    probs, _, valid = masked_probs(logits, labels, ignore_index)
    per_pixel = jnp.sum(probs * distance.astype(jnp.float32), axis=-1)
    return weighted_mean(per_pixel, valid.astype(jnp.float32))
