"""Region losses (Dice, Jaccard, Tversky, focal Tversky, Lovasz; and the binary Dice and
Lovasz hinge): not sums over pixels, each returns a scalar f32[].

Multi-class losses take logits f32[B,H,W,K] and labels i32[B,H,W]; binary ones take logits
f32[B,H,W] (or [B,H,W,1]) and labels in {0, 1, ignore_index}. Ignored pixels (label ==
ignore_index, or out of range) are masked out of every sum and get no gradient; Lovasz sorts
rather than indexes, so all shapes are static. jaxseg.losses registers them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg.loss_table import register
from jaxseg.pixel_losses import binary_inputs, masked_probs, safe_pow


def _safe_ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    """num / den, and 1 (a perfect score) where den == 0: a class absent from both prediction
    and target with smooth == 0. The double where keeps the gradient finite there."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 1.0)


# ---------------------------------------------------------------------------------------------
# Region losses over softmax probabilities: scalar f32[]


def _soft_counts(
    logits: jax.Array, labels: jax.Array, ignore_index: int, per_image: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Soft (tp, fp, fn) per class: f32[K], or f32[B,K] when per_image."""
    probs, target, _ = masked_probs(logits, labels, ignore_index)
    axes = (1, 2) if per_image else (0, 1, 2)
    tp = jnp.sum(probs * target, axis=axes)
    # Written as differences of sums: ignored pixels are zero in both probs and target.
    fp = jnp.sum(probs, axis=axes) - tp
    fn = jnp.sum(target, axis=axes) - tp
    return tp, fp, fn


def _tversky_index(tp, fp, fn, alpha: float, beta: float, smooth: float) -> jax.Array:
    # A class absent from target scores smooth / (alpha * fp + smooth): ~1 (no loss) when it is
    # also absent from the prediction, and never NaN (see _safe_ratio for smooth == 0).
    return _safe_ratio(tp + smooth, tp + alpha * fp + beta * fn + smooth)


@register("dice")
def dice_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = 255,
    smooth: float = 1.0,
    per_image: bool = False,
) -> jax.Array:
    """Soft multi-class Dice loss: mean over classes of 1 - (2 tp + s) / (sum p + sum g + s).

    Args:
      logits: f32[B,H,W,K]. labels: i32[B,H,W].
      smooth: s, added to numerator and denominator.
      per_image: counts per image and mean over images and classes, instead of batch counts.

    Returns:
      f32[] scalar.
    """
    tp, fp, fn = _soft_counts(logits, labels, ignore_index, per_image)
    # Not the Tversky index at alpha = beta = 0.5: that would halve the weight of smooth.
    return jnp.mean(1.0 - _safe_ratio(2.0 * tp + smooth, 2.0 * tp + fp + fn + smooth))


@register("jaccard")
def jaccard_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = 255,
    smooth: float = 1.0,
    per_image: bool = False,
) -> jax.Array:
    """Soft Jaccard (IoU) loss: mean over classes of 1 - (tp + s) / (tp + fp + fn + s).

    Args and returns as dice_loss: logits f32[B,H,W,K], labels i32[B,H,W] -> f32[].
    """
    tp, fp, fn = _soft_counts(logits, labels, ignore_index, per_image)
    return jnp.mean(1.0 - _tversky_index(tp, fp, fn, 1.0, 1.0, smooth))


@register("tversky")
def tversky_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = 255,
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth: float = 1.0,
    per_image: bool = False,
) -> jax.Array:
    """Tversky loss (Salehi et al. 2017): mean over classes of 1 - TI,
    TI = (tp + s) / (tp + alpha fp + beta fn + s). alpha = beta = 1 is jaccard_loss; 0.5 is
    Dice with smooth s / 2 in place of s.

    Args and returns as dice_loss: logits f32[B,H,W,K], labels i32[B,H,W] -> f32[].
    """
    tp, fp, fn = _soft_counts(logits, labels, ignore_index, per_image)
    return jnp.mean(1.0 - _tversky_index(tp, fp, fn, alpha, beta, smooth))


@register("focal_tversky")
def focal_tversky_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = 255,
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 0.75,
    smooth: float = 1.0,
    per_image: bool = False,
) -> jax.Array:
    """Focal Tversky loss (Abraham & Khan 2019): mean over classes of (1 - TI) ** gamma.

    gamma < 1 raises the loss of classes that are already nearly right. Its derivative is
    unbounded at 1 - TI = 0, so that point is given a zero gradient (see safe_pow).
    Args and returns as tversky_loss: logits f32[B,H,W,K], labels i32[B,H,W] -> f32[].
    """
    tp, fp, fn = _soft_counts(logits, labels, ignore_index, per_image)
    return jnp.mean(safe_pow(1.0 - _tversky_index(tp, fp, fn, alpha, beta, smooth), gamma))


def _lovasz_grad(gt_sorted: jax.Array) -> jax.Array:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors.

    gt_sorted: f32[N,...] ground-truth membership in order of decreasing error (axis 0).
    """
    gts = jnp.sum(gt_sorted, axis=0)
    intersection = gts - jnp.cumsum(gt_sorted, axis=0)
    union = gts + jnp.cumsum(1.0 - gt_sorted, axis=0)
    # union >= 1 at every position (either gts >= 1 or the first pixel is not in gt).
    jaccard = 1.0 - intersection / jnp.maximum(union, 1.0)
    return jnp.concatenate([jaccard[:1], jaccard[1:] - jaccard[:-1]], axis=0)


def _lovasz_sorted(errors: jax.Array, gt: jax.Array, valid: jax.Array) -> jax.Array:
    """Lovasz extension per column: errors, gt f32[N,C], valid bool[N] -> f32[C].

    Ignored pixels are sorted strictly last with error 0 and gt 0: every position they occupy
    or follow has error 0, and the positions before them see exactly the valid pixels, so the
    value and its gradient are those of the loss on the valid pixels alone.
    """
    key = jnp.where(valid[:, None], jax.lax.stop_gradient(errors), -jnp.inf)
    order = jnp.argsort(-key, axis=0, stable=True)
    errors_sorted = jnp.take_along_axis(jnp.where(valid[:, None], errors, 0.0), order, axis=0)
    gt_sorted = jnp.take_along_axis(gt, order, axis=0)
    return jnp.sum(errors_sorted * _lovasz_grad(gt_sorted), axis=0)


def _lovasz_softmax_flat(
    probs: jax.Array, target: jax.Array, valid: jax.Array, classes: str
) -> jax.Array:
    """probs, target f32[N,K] (zero at ignored pixels), valid bool[N] -> f32[]."""
    per_class = _lovasz_sorted(jnp.abs(target - probs), target, valid)
    if classes == "all":
        return jnp.mean(per_class)
    present = (jnp.sum(target, axis=0) > 0).astype(jnp.float32)
    # No present class (e.g. all pixels ignored) gives 0, as in the reference code.
    return jnp.sum(per_class * present) / jnp.maximum(jnp.sum(present), 1.0)


@register("lovasz")
def lovasz_softmax(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = 255,
    per_image: bool = False,
    classes: str = "present",
) -> jax.Array:
    """Lovasz-Softmax loss (Berman et al. 2018), a convex surrogate of 1 - IoU per class.

    Args:
      logits: f32[B,H,W,K]. labels: i32[B,H,W].
      per_image: loss per image, then the mean over images; else over the whole batch.
      classes: "present" averages over classes present in the labels, "all" over all K.

    Returns:
      f32[] scalar.
    """
    if classes not in ("present", "all"):
        raise ValueError(f"classes must be 'present' or 'all', got {classes!r}")
    probs, target, valid = masked_probs(logits, labels, ignore_index)
    num_classes = logits.shape[-1]
    flat = lambda p, t, v: _lovasz_softmax_flat(
        p.reshape(-1, num_classes), t.reshape(-1, num_classes), v.reshape(-1), classes
    )
    if per_image:
        return jnp.mean(jax.vmap(flat)(probs, target, valid))
    return flat(probs, target, valid)


# ---------------------------------------------------------------------------------------------
# Binary (one foreground class) losses on logits f32[B,H,W] or f32[B,H,W,1]


@register("binary_dice")
def binary_dice_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = 255,
    smooth: float = 1.0,
    per_image: bool = False,
) -> jax.Array:
    """Soft Dice loss of the foreground: 1 - (2 sum p g + s) / (sum p + sum g + s).

    Args:
      logits: f32[B,H,W] or f32[B,H,W,1]. labels: i32[B,H,W] in {0, 1, ignore_index}.

    Returns:
      f32[] scalar (the mean over images when per_image).
    """
    x, g, valid = binary_inputs(logits, labels, ignore_index)
    p = jax.nn.sigmoid(x) * valid
    axes = (1, 2) if per_image else (0, 1, 2)
    tp = jnp.sum(p * g, axis=axes)
    den = jnp.sum(p, axis=axes) + jnp.sum(g, axis=axes) + smooth
    return jnp.mean(1.0 - _safe_ratio(2.0 * tp + smooth, den))


@register("lovasz_hinge")
def lovasz_hinge(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = 255,
    per_image: bool = False,
) -> jax.Array:
    """Binary Lovasz hinge loss (Berman et al. 2018) on the foreground IoU.

    Args:
      logits: f32[B,H,W] or f32[B,H,W,1]. labels: i32[B,H,W] in {0, 1, ignore_index}.
      per_image: loss per image, then the mean over images; else over the whole batch.

    Returns:
      f32[] scalar.
    """
    x, y, valid = binary_inputs(logits, labels, ignore_index)

    def flat(x, y, v):
        x, y, v = x.reshape(-1, 1), y.reshape(-1, 1), v.reshape(-1)
        # Sort by the hinge margin error, then apply relu, as the reference implementation.
        margins = 1.0 - x * (2.0 * y - 1.0)
        key = jnp.where(v[:, None], jax.lax.stop_gradient(margins), -jnp.inf)
        order = jnp.argsort(-key, axis=0, stable=True)
        errors = jnp.take_along_axis(jnp.where(v[:, None], jax.nn.relu(margins), 0.0), order, 0)
        return jnp.sum(errors * _lovasz_grad(jnp.take_along_axis(y, order, 0)))

    if per_image:
        return jnp.mean(jax.vmap(flat)(x, y, valid))
    return flat(x, y, valid)
