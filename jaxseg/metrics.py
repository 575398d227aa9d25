"""Segmentation metrics: fixed-size counts summed on device, every score on the host.

Three accumulators, each summed over the whole split across the mesh:
- the confusion matrix (mIoU, Dice, precision, recall, pixel accuracy, fwIoU);
- boundary intersection/union counts per class (Boundary IoU, Cheng et al. 2021);
- calibration bins per predicted class (expected calibration error of the softmax).
Scores come only from the dataset-wide sums, never from averaging per-batch scores. A class
absent from both ground truth and prediction has no defined IoU: it is NaN in the per-class
arrays, shown as absent, and left out of the means.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(
    labels: jax.Array, preds: jax.Array, num_classes: int, *, ignore_index: int = 255
) -> jax.Array:
    """Counts i32[K,K]: rows are ground truth, columns predictions.

    labels, preds: i32[B,H,W]. Pixels labelled ignore_index (or out of range) are not counted.
    """
    valid = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)
    # Invalid pixels go to one extra bin that is dropped: integer counts, exact.
    index = jnp.where(valid, labels * num_classes + preds, num_classes**2)
    counts = jnp.bincount(index.ravel(), length=num_classes**2 + 1)[:-1]
    return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def _boundary_band(mask: jax.Array, tolerance: int) -> jax.Array:
    """bool[B,H,W,K] -> the pixels of mask within `tolerance` pixels of its contour.

    mask minus its erosion by a (2t+1)^2 square; outside the image counts as background,
    so a region touching the border has a band along it (as in the Boundary IoU paper).
    """
    t = tolerance
    padded = jnp.pad(mask.astype(jnp.int8), ((0, 0), (t, t), (t, t), (0, 0)))  # outside: 0
    window = (1, 2 * t + 1, 2 * t + 1, 1)
    # init 1 is the identity of min over {0, 1}; the zero padding does the border.
    eroded = jax.lax.reduce_window(padded, jnp.int8(1), jax.lax.min, window, (1,) * 4, "VALID")
    return mask & (eroded == 0)


def boundary_counts(
    labels: jax.Array,
    preds: jax.Array,
    num_classes: int,
    *,
    ignore_index: int = 255,
    tolerance: int = 3,
) -> jax.Array:
    """Per-class boundary intersection and union, i32[2,K].

    labels, preds: i32[B,H,W]. Boundary IoU of class k = |G_k & P_k| / |G_k | P_k| where G_k,
    P_k are the bands within `tolerance` pixels of the contours of the ground-truth and
    predicted regions of class k. Ignored pixels belong to neither region.
    """
    valid = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)
    classes = jnp.arange(num_classes)
    truth = (labels[..., None] == classes) & valid[..., None]
    pred = (preds[..., None] == classes) & valid[..., None]
    g, p = _boundary_band(truth, tolerance), _boundary_band(pred, tolerance)
    inter = jnp.sum(g & p, axis=(0, 1, 2), dtype=jnp.int32)
    union = jnp.sum(g | p, axis=(0, 1, 2), dtype=jnp.int32)
    return jnp.stack([inter, union])


def calibration_counts(
    logits: jax.Array, labels: jax.Array, *, ignore_index: int = 255, num_bins: int = 15
) -> jax.Array:
    """Reliability bins per predicted class, f32[K,num_bins,3]: (pixels, sum of confidence,
    sum of correct), binned by the softmax confidence of the predicted class.

    logits: f32[B,H,W,K]; labels: i32[B,H,W].
    """
    num_classes = logits.shape[-1]
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    confidence = probs.max(axis=-1)
    pred = probs.argmax(axis=-1)
    valid = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)
    bins = jnp.clip((confidence * num_bins).astype(jnp.int32), 0, num_bins - 1)
    index = jnp.where(valid, pred * num_bins + bins, num_classes * num_bins).ravel()
    length = num_classes * num_bins + 1
    stats = [
        jnp.ones_like(confidence),
        confidence,
        (pred == labels).astype(jnp.float32),
    ]
    sums = [jnp.bincount(index, weights=w.ravel(), length=length)[:-1] for w in stats]
    return jnp.stack(sums, axis=-1).reshape(num_classes, num_bins, 3)


def scores(
    confusion: np.ndarray, boundary: np.ndarray | None = None, calibration: np.ndarray | None = None
) -> dict:
    """Scores from a summed confusion matrix i64[K,K] (rows truth, columns prediction).

    Returns a dict with scalars pixel_acc, mean_acc, miou, fwiou, mdice and per-class
    f64[K] arrays iou, dice, acc (recall), precision, present (bool: in truth or prediction),
    and the confusion matrix itself (i64[K,K]).
    With boundary (i64[2,K] from boundary_counts): boundary_iou f64[K] and mboundary_iou.
    With calibration (f64[K,bins,3] from calibration_counts): ece f64[K] (over the pixels
    predicted as each class) and ece_all (over all pixels).
    """
    cm = np.asarray(confusion, np.float64)
    tp = np.diag(cm)
    truth = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    union = truth + pred - tp
    present = union > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(present, tp / union, np.nan)
        dice = np.where(present, 2 * tp / (truth + pred), np.nan)
        acc = np.where(truth > 0, tp / truth, np.nan)
        precision = np.where(pred > 0, tp / pred, np.nan)
    total = cm.sum()
    freq = truth / total if total else np.zeros_like(truth)
    result = {
        "pixel_acc": float(tp.sum() / total) if total else float("nan"),
        "mean_acc": _nanmean(acc),
        "miou": _nanmean(iou),
        "fwiou": float(np.nansum(freq * iou)),
        "mdice": _nanmean(dice),
        "iou": iou,
        "dice": dice,
        "acc": acc,
        "precision": precision,
        "present": present,
        "confusion": np.asarray(confusion, np.int64),
    }
    if boundary is not None:
        inter, union = np.asarray(boundary, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            result["boundary_iou"] = np.where(present & (union > 0), inter / union, np.nan)
        result["mboundary_iou"] = _nanmean(result["boundary_iou"])
    if calibration is not None:
        counts, conf, correct = np.moveaxis(np.asarray(calibration, np.float64), -1, 0)
        gaps = np.abs(conf - correct)  # per bin: n * |mean confidence - accuracy|
        with np.errstate(divide="ignore", invalid="ignore"):
            result["ece"] = np.where(counts.sum(1) > 0, gaps.sum(1) / counts.sum(1), np.nan)
        all_gaps = np.abs(conf.sum(0) - correct.sum(0)).sum()
        result["ece_all"] = float(all_gaps / counts.sum()) if counts.sum() else float("nan")
    return result


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.any(~np.isnan(x)) else float("nan")


def format_table(result: dict, class_names: tuple[str, ...]) -> str:
    """Per-class table (IoU, Dice, precision, recall, and boundary IoU and ECE when
    computed) with class names, then the means."""
    columns = [("IoU", "iou"), ("Dice", "dice"), ("Prec", "precision"), ("Recall", "acc")]
    columns += [(t, k) for t, k in (("BndIoU", "boundary_iou"), ("ECE", "ece")) if k in result]
    width = max(12, *(len(n) for n in class_names))
    lines = [f"{'class':<{width}}" + "".join(f"  {title:>7}" for title, _ in columns)]
    for k, name in enumerate(class_names):
        if not result["present"][k]:
            lines.append(f"{name:<{width}}  {'absent':>7}")
            continue
        lines.append(f"{name:<{width}}" + "".join(f"  {_pct(result[m][k])}" for _, m in columns))
    means = {
        "iou": "miou",
        "dice": "mdice",
        "acc": "mean_acc",
        "boundary_iou": "mboundary_iou",
        "ece": "ece_all",
    }
    lines.append(
        f"{'mean':<{width}}"
        + "".join(f"  {_pct(result[means[m]]) if m in means else ' ' * 7}" for _, m in columns)
    )
    lines.append(
        f"pixel acc {_pct(result['pixel_acc']).strip()}  fwIoU {_pct(result['fwiou']).strip()}"
        + ("  (ECE mean row: over all pixels)" if "ece" in result else "")
    )
    return "\n".join(lines)


def _pct(v: float) -> str:
    return f"{'n/a':>7}" if np.isnan(v) else f"{100 * v:7.2f}"


MEANS = ("miou", "pixel_acc", "mean_acc", "fwiou", "mdice", "mboundary_iou", "ece_all")
PER_CLASS = ("iou", "dice", "precision", "acc", "boundary_iou", "ece")


def flat_scores(result: dict, class_names: tuple[str, ...], prefix: str = "val") -> dict:
    """metrics.jsonl names: <prefix>/miou, <prefix>/pixel_acc, ..., <prefix>/iou/<class>,
    <prefix>/recall/<class> (acc is recall), <prefix>/ece/<class>; NaN where undefined."""
    flat = {f"{prefix}/{k}": result[k] for k in MEANS if k in result}
    for k, name in enumerate(class_names):
        for metric in PER_CLASS:
            if metric in result:
                label = "recall" if metric == "acc" else metric
                flat[f"{prefix}/{label}/{name}"] = result[metric][k]
    return flat


def _json_number(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def json_scores(result: dict, class_names: tuple[str, ...]) -> dict:
    """Every score of `result` for a JSON file: the means, and per class name its iou, dice,
    precision, recall, boundary_iou, ece and whether it is present (null: undefined)."""
    out = {k: _json_number(result[k]) for k in MEANS if k in result}
    out["per_class"] = {
        name: {
            ("recall" if m == "acc" else m): _json_number(result[m][k])
            for m in PER_CLASS
            if m in result
        }
        | {"present": bool(result["present"][k])}
        for k, name in enumerate(class_names)
    }
    return out
