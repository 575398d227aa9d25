import jax.numpy as jnp
import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jaxseg import metrics


def _reference_confusion(labels, preds, k, ignore=255):
    cm = np.zeros((k, k), np.int64)
    for t, p in zip(labels.ravel(), preds.ravel(), strict=True):
        if t != ignore:
            cm[t, p] += 1
    return cm


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 9), st.integers(1, 3), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_confusion_matrix_matches_numpy(k, b, side, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, (b, side, side + 1))
    labels[rng.random(labels.shape) < 0.2] = 255
    preds = rng.integers(0, k, labels.shape)
    got = metrics.confusion_matrix(jnp.asarray(labels), jnp.asarray(preds), k)
    np.testing.assert_array_equal(np.asarray(got), _reference_confusion(labels, preds, k))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(0, 2**31 - 1))
def test_scores_match_reference(k, seed):
    rng = np.random.default_rng(seed)
    cm = rng.integers(0, 50, (k, k))
    cm[rng.integers(0, k)] = 0  # a class absent from ground truth...
    absent = rng.integers(0, k)
    cm[absent, :] = 0
    cm[:, absent] = 0  # ...and one absent from both
    assume(cm.sum() > 0)
    s = metrics.scores(cm)
    for c in range(k):
        tp, fn, fp = cm[c, c], cm[c].sum() - cm[c, c], cm[:, c].sum() - cm[c, c]
        if tp + fn + fp == 0:
            assert not s["present"][c] and np.isnan(s["iou"][c]) and np.isnan(s["dice"][c])
            continue
        np.testing.assert_allclose(s["iou"][c], tp / (tp + fp + fn))
        np.testing.assert_allclose(s["dice"][c], 2 * tp / (2 * tp + fp + fn))
    present = [c for c in range(k) if s["present"][c]]
    ious = [cm[c, c] / (cm[c].sum() + cm[:, c].sum() - cm[c, c]) for c in present]
    np.testing.assert_allclose(s["miou"], np.mean(ious))
    np.testing.assert_allclose(s["pixel_acc"], np.trace(cm) / cm.sum())
    with_truth = [c for c in range(k) if cm[c].sum() > 0]
    np.testing.assert_allclose(s["mean_acc"], np.mean([cm[c, c] / cm[c].sum() for c in with_truth]))
    freq = cm.sum(1) / cm.sum()
    np.testing.assert_allclose(s["fwiou"], sum(freq[c] * s["iou"][c] for c in present))


def test_hand_computed_scores_and_table():
    cm = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])  # class 2 absent everywhere
    s = metrics.scores(cm)
    np.testing.assert_allclose(s["iou"][:2], [3 / 4, 2 / 3])
    np.testing.assert_allclose(s["miou"], (3 / 4 + 2 / 3) / 2)
    np.testing.assert_allclose(s["pixel_acc"], 5 / 6)
    table = metrics.format_table(s, ("bg", "cell", "void"))
    assert "void" in table and "absent" in table and "75.00" in table


def _reference_boundary(labels, preds, k, t, ignore=255):
    from scipy import ndimage

    inter, union = np.zeros(k), np.zeros(k)
    structure = np.ones((2 * t + 1, 2 * t + 1), bool)
    for lab, pred in zip(labels, preds, strict=True):
        valid = lab != ignore
        for c in range(k):
            g, p = (lab == c) & valid, (pred == c) & valid
            gb = g & ~ndimage.binary_erosion(g, structure, border_value=0)
            pb = p & ~ndimage.binary_erosion(p, structure, border_value=0)
            inter[c] += (gb & pb).sum()
            union[c] += (gb | pb).sum()
    return inter, union


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 5), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_boundary_counts_match_scipy_reference(k, t, seed):
    rng = np.random.default_rng(seed)
    # blocky label maps, so there are regions with interiors
    labels = np.kron(rng.integers(0, k, (2, 4, 5)), np.ones((4, 4), int))
    preds = np.kron(rng.integers(0, k, (2, 4, 5)), np.ones((4, 4), int))
    labels[rng.random(labels.shape) < 0.05] = 255
    got = np.asarray(
        metrics.boundary_counts(jnp.asarray(labels), jnp.asarray(preds), k, tolerance=t)
    )
    inter, union = _reference_boundary(labels, preds, k, t)
    np.testing.assert_array_equal(got[0], inter)
    np.testing.assert_array_equal(got[1], union)


def test_boundary_iou_perfect_and_shifted():
    labels = np.zeros((1, 12, 12), int)
    labels[0, 3:9, 3:9] = 1
    perfect = metrics.scores(
        np.eye(2, dtype=int),
        metrics.boundary_counts(jnp.asarray(labels), jnp.asarray(labels), 2, tolerance=1),
    )
    assert perfect["boundary_iou"][1] == 1.0
    shifted = np.roll(labels, 2, axis=2)
    counts = np.asarray(
        metrics.boundary_counts(jnp.asarray(labels), jnp.asarray(shifted), 2, tolerance=1)
    )
    # band of the 6x6 square with t=1 is its 20-pixel ring; shifting by 2 keeps 8 in common
    assert counts[0, 1] == 8 and counts[1, 1] == 32


def test_calibration_counts_and_ece_match_reference():
    rng = np.random.default_rng(0)
    k, bins = 4, 10
    logits = rng.normal(size=(2, 5, 6, k)).astype(np.float32) * 3
    labels = rng.integers(0, k, (2, 5, 6))
    labels[0, 0] = 255
    got = np.asarray(
        metrics.calibration_counts(jnp.asarray(logits), jnp.asarray(labels), num_bins=bins)
    )
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    conf, pred = probs.max(-1), probs.argmax(-1)
    valid = labels != 255
    ref = np.zeros((k, bins, 3))
    for c, p, y in zip(conf[valid], pred[valid], labels[valid], strict=True):
        b = min(int(c * bins), bins - 1)
        ref[p, b] += (1, c, p == y)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    s = metrics.scores(np.eye(k, dtype=int), calibration=ref)
    n = ref[..., 0].sum()
    np.testing.assert_allclose(
        s["ece_all"], np.abs(ref[..., 1].sum(0) - ref[..., 2].sum(0)).sum() / n
    )
    for c in range(k):
        if ref[c, :, 0].sum():
            np.testing.assert_allclose(
                s["ece"][c], np.abs(ref[c, :, 1] - ref[c, :, 2]).sum() / ref[c, :, 0].sum()
            )


def test_table_has_every_column_and_class():
    cm = np.array([[5, 1], [2, 4]])
    s = metrics.scores(cm, np.array([[3, 2], [4, 4]]), np.ones((2, 15, 3)))
    table = metrics.format_table(s, ("road", "car"))
    for word in ("IoU", "Dice", "Prec", "Recall", "BndIoU", "ECE", "road", "car"):
        assert word in table
