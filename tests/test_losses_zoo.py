"""Loss zoo: hand-computed values, float64 numpy references, limits, ignore handling."""

import os
import re

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest

from jaxseg import cli, losses
from jaxseg.data.pipeline import signed_distance

IGNORE = 255
BINARY = ("bce", "binary_dice", "lovasz_hinge")
LN3 = np.log(3.0)


def _scalar(name, logits, labels, **kw):
    if name == "boundary" and "distance" not in kw:
        # Distance maps come from the pipeline (host numpy), not from traced labels; for the
        # generic checks any fixed map will do (signed_distance has its own test).
        rng = np.random.default_rng(0)
        kw["distance"] = jnp.asarray(rng.normal(size=logits.shape), jnp.float32)
    out = losses.LOSSES[name](logits, labels, **kw)
    return losses.weighted_mean(*out) if isinstance(out, tuple) else out


def _random_case(seed, shape=(2, 4, 5), num_classes=4, absent_class=True, ignore_frac=0.2):
    rng = np.random.default_rng(seed)
    logits = (2.0 * rng.normal(size=(*shape, num_classes))).astype(np.float32)
    # Leave the last class out of the labels: absent classes must be handled.
    high = num_classes - 1 if absent_class else num_classes
    labels = rng.integers(0, high, size=shape)
    labels[rng.random(shape) < ignore_frac] = IGNORE
    return logits, labels


def _logit_for(p):
    """Two-class logits (0, ln(p / (1 - p))): softmax gives class 1 probability p."""
    return [0.0, np.log(p / (1.0 - p))]


# ---------------------------------------------------------------------------------------------
# float64 numpy references, written from the papers' definitions


def np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_sums(logits, labels, per_image):
    k = logits.shape[-1]
    valid = (labels != IGNORE)[..., None]
    p = np_softmax(logits) * valid
    g = np.eye(k)[np.where(labels == IGNORE, 0, labels)] * valid
    axes = (1, 2) if per_image else (0, 1, 2)
    return (p * g).sum(axes), p.sum(axes), g.sum(axes)


def np_dice(logits, labels, smooth=1.0, per_image=False):
    inter, psum, gsum = np_sums(logits, labels, per_image)
    return np.mean(1 - (2 * inter + smooth) / (psum + gsum + smooth))


def np_jaccard(logits, labels, smooth=1.0, per_image=False):
    inter, psum, gsum = np_sums(logits, labels, per_image)
    return np.mean(1 - (inter + smooth) / (psum + gsum - inter + smooth))


def np_tversky(logits, labels, alpha, beta, smooth=1.0, gamma=1.0, per_image=False):
    tp, psum, gsum = np_sums(logits, labels, per_image)
    ti = (tp + smooth) / (tp + alpha * (psum - tp) + beta * (gsum - tp) + smooth)
    return np.mean((1 - ti) ** gamma)


def np_focal(logits, labels, gamma, alpha=None):
    p = np_softmax(logits)
    valid = labels != IGNORE
    y = labels[valid]
    pt = np.take_along_axis(p[valid], y[:, None], -1)[:, 0]
    a = np.ones_like(pt) if alpha is None else np.asarray(alpha, np.float64)[y]
    return np.mean(-a * (1 - pt) ** gamma * np.log(pt))


def np_lovasz_grad(gt_sorted):
    gts = gt_sorted.sum()
    intersection = gts - np.cumsum(gt_sorted)
    union = gts + np.cumsum(1 - gt_sorted)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def np_lovasz_flat(probs, labels, classes):
    """probs [P,K] and labels [P] of valid pixels only (boolean indexing, unlike the library)."""
    if len(labels) == 0:
        return 0.0
    out = []
    for c in range(probs.shape[1]):
        fg = (labels == c).astype(np.float64)
        if classes == "present" and fg.sum() == 0:
            continue
        errors = np.abs(fg - probs[:, c])
        perm = np.argsort(-errors, kind="stable")
        out.append(np.dot(errors[perm], np_lovasz_grad(fg[perm])))
    return float(np.mean(out)) if out else 0.0


def np_lovasz_softmax(logits, labels, per_image=False, classes="present"):
    p = np_softmax(logits)
    k = p.shape[-1]
    if per_image:
        return np.mean(
            [
                np_lovasz_flat(pi[li != IGNORE], li[li != IGNORE], classes)
                for pi, li in zip(p, labels, strict=True)
            ]
        )
    valid = labels != IGNORE
    return np_lovasz_flat(p[valid].reshape(-1, k), labels[valid], classes)


def np_lovasz_hinge(logits, labels):
    valid = labels != IGNORE
    x, y = np.asarray(logits, np.float64)[valid], labels[valid].astype(np.float64)
    errors = 1.0 - x * (2 * y - 1)
    perm = np.argsort(-errors, kind="stable")
    return np.dot(np.maximum(errors[perm], 0), np_lovasz_grad(y[perm]))


# ---------------------------------------------------------------------------------------------
# Hand-computed values on 2x2 images

# True-class probabilities 0.9, 0.6 / 0.8, 0.5 for label 1, two classes.
P_TRUE = np.array([[0.9, 0.6], [0.8, 0.5]])
HARD_LOGITS = np.array([[[_logit_for(p) for p in row] for row in P_TRUE]], np.float32)
ONES = np.ones((1, 2, 2), np.int32)


@pytest.mark.parametrize(
    "min_kept, expected", [(0, [[0, 1], [0, 1]]), (3, [[0, 1], [1, 1]]), (10, [[1, 1], [1, 1]])]
)
def test_ohem_hand_computed(min_kept, expected):
    loss, weight = losses.ohem_cross_entropy(
        jnp.asarray(HARD_LOGITS), jnp.asarray(ONES), thresh=0.7, min_kept=min_kept
    )
    np.testing.assert_array_equal(weight[0], expected)
    np.testing.assert_allclose(loss[0], -np.log(P_TRUE), rtol=1e-5)


def test_ohem_class_weights_and_ignore():
    labels = np.array([[[1, 1], [1, IGNORE]]])
    _, weight = losses.ohem_cross_entropy(
        jnp.asarray(HARD_LOGITS), jnp.asarray(labels), min_kept=0, class_weights=jnp.array([1, 3.0])
    )
    # p=0.5 would be kept but is ignored; p=0.6 is kept with its class weight 3.
    np.testing.assert_array_equal(weight[0], [[0, 3], [0, 0]])


def test_topk_hand_computed():
    _, weight = losses.topk_cross_entropy(
        jnp.asarray(HARD_LOGITS), jnp.asarray(ONES), k_percent=0.5
    )
    np.testing.assert_array_equal(weight[0], [[0, 1], [0, 1]])
    # 3 valid pixels: ceil(0.5 * 3) = 2 hardest of (0.9, 0.6, 0.8) are 0.6 and 0.8.
    labels = np.array([[[1, 1], [1, IGNORE]]])
    _, weight = losses.topk_cross_entropy(
        jnp.asarray(HARD_LOGITS), jnp.asarray(labels), k_percent=0.5
    )
    np.testing.assert_array_equal(weight[0], [[0, 1], [1, 0]])


def test_focal_hand_computed():
    # p_y = 3/4 everywhere: loss = alpha_y * (1/4)^2 * -ln(3/4).
    logits = np.tile(np.array([0.0, LN3], np.float32), (1, 2, 2, 1))
    labels = np.array([[[1, 1], [0, IGNORE]]])
    loss, weight = losses.focal_loss(jnp.asarray(logits), jnp.asarray(labels), gamma=2.0)
    np.testing.assert_allclose(loss[0, 0], [np.log(4 / 3) / 16] * 2, rtol=1e-6)
    np.testing.assert_allclose(loss[0, 1], [np.log(4.0) * (3 / 4) ** 2, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(weight[0], [[1, 1], [1, 0]])
    loss, _ = losses.focal_loss(
        jnp.asarray(logits), jnp.asarray(labels), gamma=2.0, alpha=jnp.array([0.25, 0.75])
    )
    np.testing.assert_allclose(loss[0, 0, 0], 0.75 * np.log(4 / 3) / 16, rtol=1e-6)
    # gamma 0 is plain cross-entropy.
    loss, _ = losses.focal_loss(jnp.asarray(logits), jnp.asarray(labels), gamma=0.0)
    ce, _ = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(loss, ce, rtol=1e-6)


# probs (1/4, 3/4) at every pixel; labels 1, 0 / 1, 1.
REGION_LOGITS = np.tile(np.array([0.0, LN3], np.float32), (1, 2, 2, 1))
REGION_LABELS = np.array([[[1, 0], [1, 1]]])


@pytest.mark.parametrize(
    "name, kw, expected",
    [
        # class 1: tp 2.25, sum p 3, sum g 3; class 0: tp 0.25, sum p 1, sum g 1; smooth 1.
        ("dice", {}, 1 - (5.5 / 7 + 1.5 / 3) / 2),
        ("jaccard", {}, 1 - (3.25 / 4.75 + 1.25 / 2.75) / 2),
        # fp = fn = 0.75 for both classes: TI = (tp + 1) / (tp + 0.6 * 0.75 + 1).
        ("tversky", {"alpha": 0.2, "beta": 0.4}, 1 - (3.25 / 3.7 + 1.25 / 1.7) / 2),
        ("focal_tversky", {"gamma": 0.5}, ((1 - 3.25 / 4) ** 0.5 + (1 - 1.25 / 2) ** 0.5) / 2),
        ("dice", {"smooth": 0.0}, 1 - (4.5 / 6 + 0.5 / 2) / 2),
    ],
)
def test_region_losses_hand_computed(name, kw, expected):
    value = losses.LOSSES[name](jnp.asarray(REGION_LOGITS), jnp.asarray(REGION_LABELS), **kw)
    np.testing.assert_allclose(float(value), expected, rtol=1e-6)


def test_binary_losses_hand_computed():
    logits = np.array([[[0.0, LN3], [LN3, 50.0]]], np.float32)
    labels = np.array([[[1, 1], [0, IGNORE]]])
    loss, weight = losses.sigmoid_bce(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(loss[0], [[np.log(2), -np.log(0.75)], [-np.log(0.25), 0]], 1e-6)
    np.testing.assert_array_equal(weight[0], [[1, 1], [1, 0]])
    # p = (1/2, 3/4, 3/4), g = (1, 1, 0): 1 - (2 * 1.25 + 1) / (2 + 2 + 1).
    value = losses.binary_dice_loss(jnp.asarray(logits[..., None]), jnp.asarray(labels))
    np.testing.assert_allclose(float(value), 1 - 3.5 / 5, rtol=1e-6)


def test_lovasz_hinge_hand_computed():
    # Margin errors 0.5 (fg), -1 (bg), -2 (fg); sorted gt (1, 0, 1): Jaccard (1/2, 2/3, 1),
    # gradient (1/2, 1/6, 1/3); only the first error is positive: 0.5 * 0.5.
    logits = np.array([[[0.5, -2.0], [3.0, 99.0]]], np.float32)
    labels = np.array([[[1, 0], [1, IGNORE]]])
    value = losses.lovasz_hinge(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(float(value), 0.25, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Random inputs against the float64 references


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("per_image", [False, True])
def test_region_losses_match_reference(seed, per_image):
    logits, labels = _random_case(seed)
    x, y = jnp.asarray(logits), jnp.asarray(labels)
    cases = [
        (losses.dice_loss(x, y, per_image=per_image), np_dice(logits, labels, per_image=per_image)),
        (
            losses.jaccard_loss(x, y, smooth=0.5, per_image=per_image),
            np_jaccard(logits, labels, smooth=0.5, per_image=per_image),
        ),
        (
            losses.tversky_loss(x, y, alpha=0.3, beta=0.7, per_image=per_image),
            np_tversky(logits, labels, 0.3, 0.7, per_image=per_image),
        ),
        (
            losses.focal_tversky_loss(x, y, alpha=0.7, beta=0.3, per_image=per_image),
            np_tversky(logits, labels, 0.7, 0.3, gamma=0.75, per_image=per_image),
        ),
    ]
    for got, want in cases:
        np.testing.assert_allclose(float(got), want, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("gamma, alpha", [(2.0, None), (0.5, [0.1, 0.2, 0.3, 0.4]), (0.0, None)])
def test_focal_matches_reference(seed, gamma, alpha):
    logits, labels = _random_case(seed)
    alpha_j = None if alpha is None else jnp.asarray(alpha)
    value = losses.weighted_mean(
        *losses.focal_loss(jnp.asarray(logits), jnp.asarray(labels), gamma=gamma, alpha=alpha_j)
    )
    np.testing.assert_allclose(float(value), np_focal(logits, labels, gamma, alpha), rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all"])
def test_lovasz_softmax_matches_reference(seed, per_image, classes):
    logits, labels = _random_case(seed)
    if per_image:
        labels[1] = IGNORE  # an image with no valid pixel counts as 0, as in the reference
    value = losses.lovasz_softmax(
        jnp.asarray(logits), jnp.asarray(labels), per_image=per_image, classes=classes
    )
    want = np_lovasz_softmax(logits, labels, per_image=per_image, classes=classes)
    np.testing.assert_allclose(float(value), want, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_lovasz_hinge_matches_reference(seed):
    rng = np.random.default_rng(seed)
    logits = (2 * rng.normal(size=(2, 4, 5))).astype(np.float32)
    labels = rng.integers(0, 2, size=(2, 4, 5))
    labels[rng.random(labels.shape) < 0.2] = IGNORE
    value = losses.lovasz_hinge(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(float(value), np_lovasz_hinge(logits, labels), rtol=1e-5)
    per_image = losses.lovasz_hinge(jnp.asarray(logits), jnp.asarray(labels), per_image=True)
    want = np.mean([np_lovasz_hinge(x, y) for x, y in zip(logits, labels, strict=True)])
    np.testing.assert_allclose(float(per_image), want, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Limits


def _perfect(labels, num_classes, margin=100.0):
    onehot = np.eye(num_classes)[np.where(labels == IGNORE, 0, labels)]
    return jnp.asarray(margin * (2 * onehot - 1), jnp.float32)


@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky", "focal_tversky", "lovasz"])
@pytest.mark.parametrize("per_image", [False, True])
def test_perfect_logits_give_zero(name, per_image):
    _, labels = _random_case(3)  # class 3 is absent from labels and prediction
    value = losses.LOSSES[name](_perfect(labels, 4), jnp.asarray(labels), per_image=per_image)
    assert abs(float(value)) < 1e-6


def test_binary_perfect_logits_give_zero():
    labels = np.array([[[1, 0], [0, IGNORE]]])
    logits = jnp.asarray(100.0 * (2 * labels - 1), jnp.float32)
    assert float(losses.binary_dice_loss(logits, jnp.asarray(labels))) < 1e-6
    assert float(losses.lovasz_hinge(logits, jnp.asarray(labels))) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lovasz_saturated_equals_one_minus_miou(seed):
    rng = np.random.default_rng(seed)
    k = 5
    labels = rng.integers(0, k - 1, size=(2, 6, 7))
    labels[rng.random(labels.shape) < 0.2] = IGNORE
    pred = rng.integers(0, k, size=labels.shape)  # predicts some classes absent from labels
    value = losses.lovasz_softmax(_perfect(pred, k), jnp.asarray(labels))
    valid = labels != IGNORE
    ious = []
    for c in range(k):
        gt, pr = (labels == c) & valid, (pred == c) & valid
        if gt.any():
            ious.append((gt & pr).sum() / (gt | pr).sum())
    np.testing.assert_allclose(float(value), 1 - np.mean(ious), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Ignored pixels, jit, vmap


def _inputs_for(name, seed=0):
    logits, labels = _random_case(seed)
    if name in BINARY:
        logits, labels = logits[..., 0], np.where(labels == IGNORE, IGNORE, labels % 2)
    return logits, labels


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_all_ignored_is_finite_with_zero_grad(name):
    logits, labels = _inputs_for(name)
    labels = jnp.full(labels.shape, IGNORE)
    value, grad = jax.jit(jax.value_and_grad(lambda x: _scalar(name, x, labels)))(
        jnp.asarray(logits)
    )
    assert np.isfinite(float(value))
    assert np.all(np.asarray(grad) == 0.0)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
@pytest.mark.parametrize("garbage", [1e30, -1e30, 1e4])
def test_garbage_at_ignored_pixels_changes_nothing(name, garbage):
    logits, labels = _inputs_for(name, seed=4)
    ignored = labels == IGNORE
    assert ignored.any() and not ignored.all()
    other = logits.copy()
    other[ignored] = garbage
    f = jax.jit(jax.value_and_grad(lambda x: _scalar(name, x, jnp.asarray(labels))))
    v1, g1 = f(jnp.asarray(logits))
    v2, g2 = f(jnp.asarray(other))
    assert np.isfinite(float(v1)) and float(v1) == float(v2)
    np.testing.assert_array_equal(np.asarray(g1), np.asarray(g2))
    assert np.all(np.isfinite(np.asarray(g1)))
    assert np.all(np.asarray(g2)[ignored] == 0.0)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_jit_matches_eager_and_vmap_matches_loop(name):
    logits, labels = _inputs_for(name, seed=5)
    x, y = jnp.asarray(logits), jnp.asarray(labels)
    eager = _scalar(name, x, y)
    jitted = jax.jit(lambda a, b: _scalar(name, a, b))(x, y)
    np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-6)
    # vmap over a leading "replica" axis: each replica sees the whole batch.
    stacked = jax.vmap(lambda a, b: _scalar(name, a, b))(jnp.stack([x, -x]), jnp.stack([y, y]))
    np.testing.assert_allclose(stacked, [eager, _scalar(name, -x, y)], rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Registry and combination


def test_combined_loss_is_weighted_sum():
    logits, labels = _random_case(6)
    x, y = jnp.asarray(logits), jnp.asarray(labels)
    cw = jnp.array([1.0, 2.0, 0.5, 1.0])
    got = losses.combined_loss(x, y, {"ce": 1.0, "dice": 0.5, "lovasz": 2.0}, class_weights=cw)
    want = (
        losses.weighted_mean(*losses.cross_entropy(x, y, class_weights=cw))
        + 0.5 * losses.dice_loss(x, y)
        + 2.0 * losses.lovasz_softmax(x, y)
    )
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    grad = jax.jit(jax.grad(lambda a: losses.combined_loss(a, y, {"focal": 1.0, "topk": 1.0})))(x)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_combined_loss_unknown_name_lists_valid_ones():
    with pytest.raises(KeyError, match="lovasz_hinge"):
        losses.combined_loss(jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 2), jnp.int32), {"dcie": 1})


def test_registry_names():
    assert set(losses.LOSSES) == {
        "ce", "ohem", "topk", "focal", "dice", "jaccard", "tversky", "focal_tversky",
        "lovasz", "bce", "binary_dice", "lovasz_hinge", "boundary",
    }  # fmt: skip


@pytest.mark.parametrize("name", ["ohem", "topk", "focal", "dice", "tversky", "lovasz", "bce"])
def test_gradients_match_finite_differences(name):
    # Random inputs have no ties, so the sorts are locally constant and the loss is smooth.
    logits, labels = _inputs_for(name, seed=7)
    f = lambda x: _scalar(name, x, jnp.asarray(labels))
    jax.test_util.check_grads(f, (jnp.asarray(logits),), order=1, modes=["rev"], atol=2e-2)


def test_signed_distance_hand_computed():
    mask = np.array([[0, 0, 1, 1, 0]])
    d = signed_distance(mask, 3)
    # class 1: outside distances 2, 1 and 1; inside border pixels 0
    np.testing.assert_array_equal(d[0, :, 1], [2, 1, 0, 0, 1])
    # class 0 at 0, 1 and 4: pixel 0 lies one step deeper inside; 2 and 3 are 1 from it
    np.testing.assert_array_equal(d[0, :, 0], [-1, 0, 1, 1, 0])
    assert np.all(d[..., 2] == 0)  # absent class
    inner = np.zeros((5, 5), int)
    inner[1:4, 1:4] = 1
    assert signed_distance(inner, 2)[2, 2, 1] == -1  # one pixel deep inside the region
    ignored = np.array([[1, 255, 0]])
    assert np.all(signed_distance(ignored, 2)[0, 1] == 0)


def test_boundary_loss_hand_computed_and_needs_distance():
    # One pixel row, 2 classes; probabilities (0.25, 0.75) everywhere.
    logits = jnp.asarray(np.tile([0.0, LN3], (1, 1, 3, 1)), jnp.float32)
    labels = jnp.asarray([[[0, 1, 255]]])
    distance = jnp.asarray([[[[-1.0, 2.0], [3.0, -2.0], [9.0, 9.0]]]])
    value = losses.boundary_loss(logits, labels, distance=distance)
    # pixel 0: .25 * -1 + .75 * 2 = 1.25; pixel 1: .25 * 3 + .75 * -2 = -0.75; mean 0.25
    np.testing.assert_allclose(float(value), 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match="distance maps"):
        losses.boundary_loss(logits, labels)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_single_class_batch_is_finite(name):
    logits, labels = _inputs_for(name, seed=7)
    labels = jnp.zeros(labels.shape, jnp.int32)  # every pixel one class: the rest absent
    value, grad = jax.jit(jax.value_and_grad(lambda x: _scalar(name, x, labels)))(
        jnp.asarray(logits)
    )
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(np.asarray(grad)))


def test_loss_options_act_and_mistakes_are_refused():
    """loss.<term> options reach the loss (focal gamma changes the loss), and options of
    another term, misspelt ones, or class weights without a term that takes them are
    refused naming the field."""
    import functools

    import optax

    from jaxseg import config_checks, configs, recipe
    from jaxseg.models import build_model
    from jaxseg.state import create_train_state

    unet = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "unet.py"
    )
    model = build_model("linear", 3)
    state = create_train_state(model, optax.identity(), jax.random.key(0), (6, 6, 3))
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.integers(0, 256, (2, 6, 6, 3)), jnp.uint8),
        "mask": jnp.asarray(rng.integers(0, 3, (2, 6, 6)), jnp.int32),
    }

    def loss_with(*overrides):
        config = cli.load_experiment(unet, "--config.loss.terms=(('focal', 1.0),)", *overrides)
        config_checks.check_options(config)
        step = recipe.train_step(
            config, model, optax.identity(), optax.constant_schedule(0.0), None
        )
        return float(functools.partial(step)(state, batch, jax.random.key(0))[1]["loss"])

    default = loss_with()
    gamma0 = loss_with("--config.loss.focal.gamma=0.0")
    assert gamma0 > default  # gamma 0 is plain cross-entropy, larger than the focal default
    mistakes = {
        "--config.loss.focal.gama=1.0": "loss 'focal' does not take it; did you mean "
        "loss.focal.gamma",
        "--config.loss.dice.smooth=1.0": "'dice' is not in loss.terms ('focal',)",
        "--config.loss.ce.label_smoothing=0.1": "'ce' is not in loss.terms ('focal',)",
    }
    for override, says in mistakes.items():
        with pytest.raises(configs.ConfigError, match=re.escape(says)):
            loss_with(override)
    with pytest.raises(configs.ConfigError, match="class weights act on the terms that take"):
        loss_with("--config.loss.class_weights=(1.0, 2.0, 3.0, 1.0, 1.0)")
