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
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp

from jaxseg import registry


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
# Shared helpers


def _valid(labels: jax.Array, num_classes: int, ignore_index: int) -> jax.Array:
    """bool[...]: pixels with a label in [0, num_classes) that is not ignore_index."""
    return (labels != ignore_index) & (labels >= 0) & (labels < num_classes)


def _masked_probs(
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


def _safe_ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    """num / den, and 1 (a perfect score) where den == 0: a class absent from both prediction
    and target with smooth == 0. The double where keeps the gradient finite there."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 1.0)


def _safe_pow(x: jax.Array, gamma: float) -> jax.Array:
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
        loss = _safe_pow(-jnp.expm1(log_pt), gamma) * loss
    if alpha is not None and len(alpha):
        loss = loss * jnp.asarray(alpha, jnp.float32)[safe]
    return jnp.where(valid, loss, 0.0), valid.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Region losses over softmax probabilities: scalar f32[]


def _soft_counts(
    logits: jax.Array, labels: jax.Array, ignore_index: int, per_image: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Soft (tp, fp, fn) per class: f32[K], or f32[B,K] when per_image."""
    probs, target, _ = _masked_probs(logits, labels, ignore_index)
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
    unbounded at 1 - TI = 0, so that point is given a zero gradient (see _safe_pow).
    Args and returns as tversky_loss: logits f32[B,H,W,K], labels i32[B,H,W] -> f32[].
    """
    tp, fp, fn = _soft_counts(logits, labels, ignore_index, per_image)
    return jnp.mean(_safe_pow(1.0 - _tversky_index(tp, fp, fn, alpha, beta, smooth), gamma))


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
    probs, target, valid = _masked_probs(logits, labels, ignore_index)
    num_classes = logits.shape[-1]
    flat = lambda p, t, v: _lovasz_softmax_flat(
        p.reshape(-1, num_classes), t.reshape(-1, num_classes), v.reshape(-1), classes
    )
    if per_image:
        return jnp.mean(jax.vmap(flat)(probs, target, valid))
    return flat(probs, target, valid)


# ---------------------------------------------------------------------------------------------
# Binary (one foreground class) losses on logits f32[B,H,W] or f32[B,H,W,1]


def _binary_inputs(
    logits: jax.Array, labels: jax.Array, ignore_index: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (logits f32[B,H,W] zeroed at ignored pixels, target f32 in {0,1}, valid bool)."""
    if logits.ndim == labels.ndim + 1 and logits.shape[-1] == 1:
        logits = logits[..., 0]
    valid = _valid(labels, 2, ignore_index)
    logits = jnp.where(valid, logits.astype(jnp.float32), 0.0)
    target = jnp.where(valid, labels, 0).astype(jnp.float32)
    return logits, target, valid


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
    x, y, valid = _binary_inputs(logits, labels, ignore_index)
    # log s(x) = -softplus(-x), log(1 - s(x)) = -softplus(x): stable for large |x|.
    loss = pos_weight * y * jax.nn.softplus(-x) + (1.0 - y) * jax.nn.softplus(x)
    return jnp.where(valid, loss, 0.0), valid.astype(jnp.float32)


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
    x, g, valid = _binary_inputs(logits, labels, ignore_index)
    p = jax.nn.sigmoid(x) * valid
    axes = (1, 2) if per_image else (0, 1, 2)
    tp = jnp.sum(p * g, axis=axes)
    den = jnp.sum(p, axis=axes) + jnp.sum(g, axis=axes) + smooth
    return jnp.mean(1.0 - _safe_ratio(2.0 * tp + smooth, den))


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
    x, y, valid = _binary_inputs(logits, labels, ignore_index)

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


# ---------------------------------------------------------------------------------------------
# Registry and combination


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
    probs, _, valid = _masked_probs(logits, labels, ignore_index)
    per_pixel = jnp.sum(probs * distance.astype(jnp.float32), axis=-1)
    return weighted_mean(per_pixel, valid.astype(jnp.float32))


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
