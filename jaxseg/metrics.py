"""Segmentation metrics: a confusion matrix summed on device, every score on the host.

mIoU and friends come only from the dataset-wide confusion matrix, never from
averaging per-batch scores. A class absent from both ground truth and prediction has
no defined IoU: it is NaN in the per-class arrays and left out of the means.
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


def scores(confusion: np.ndarray) -> dict:
    """Scores from a summed confusion matrix i64[K,K] (rows truth, columns prediction).

    Returns a dict with scalars pixel_acc, mean_acc, miou, fwiou, mdice and per-class
    f64[K] arrays iou, dice, acc (recall), precision, present (bool: in truth or prediction).
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
    return {
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
    }


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.any(~np.isnan(x)) else float("nan")


def format_table(result: dict, class_names: tuple[str, ...]) -> str:
    """Per-class table (IoU, Dice, accuracy, precision) with class names, then the means."""
    width = max(12, *(len(n) for n in class_names))
    lines = [f"{'class':<{width}}  {'IoU':>7}  {'Dice':>7}  {'Acc':>7}  {'Prec':>7}"]
    for k, name in enumerate(class_names):
        if not result["present"][k]:
            lines.append(f"{name:<{width}}  {'absent':>7}")
            continue
        cells = (result[m][k] for m in ("iou", "dice", "acc", "precision"))
        lines.append(f"{name:<{width}}  " + "  ".join(_pct(v) for v in cells))
    lines.append(
        f"{'mean':<{width}}  {_pct(result['miou'])}  {_pct(result['mdice'])}  "
        f"{_pct(result['mean_acc'])}"
    )
    lines.append(
        f"pixel acc {_pct(result['pixel_acc']).strip()}  fwIoU {_pct(result['fwiou']).strip()}"
    )
    return "\n".join(lines)


def _pct(v: float) -> str:
    return f"{'n/a':>7}" if np.isnan(v) else f"{100 * v:7.2f}"
