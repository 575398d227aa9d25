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
