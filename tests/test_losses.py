import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import losses


def _ce(logits, labels, **kw):
    loss, weight = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), **kw)
    return float(losses.weighted_mean(loss, weight)), loss, weight


def test_hand_computed_two_pixels():
    # Pixel 0: logits (0, ln 3) label 1 -> p = 3/4 -> -ln(3/4). Pixel 1: uniform over 2 -> ln 2.
    logits = np.array([[[[0.0, np.log(3.0)], [1.0, 1.0]]]], np.float32)  # [1,1,2,2]
    labels = np.array([[[1, 0]]])
    value, loss, _ = _ce(logits, labels)
    np.testing.assert_allclose(loss[0, 0], [-np.log(0.75), np.log(2.0)], rtol=1e-6)
    np.testing.assert_allclose(value, (-np.log(0.75) + np.log(2.0)) / 2, rtol=1e-6)


def test_ignored_pixel_and_class_weights():
    logits = np.array([[[[0.0, np.log(3.0)], [1.0, 1.0], [5.0, -5.0]]]], np.float32)
    labels = np.array([[[1, 0, 255]]])
    value, loss, weight = _ce(logits, labels, class_weights=jnp.array([2.0, 1.0]))
    np.testing.assert_allclose(weight[0, 0], [1.0, 2.0, 0.0])
    assert float(loss[0, 0, 2]) == 0.0
    # weighted mean: (1 * -ln .75 + 2 * ln 2) / 3, the ignored pixel counts nowhere
    np.testing.assert_allclose(value, (-np.log(0.75) + 2 * np.log(2.0)) / 3, rtol=1e-6)


def test_label_smoothing_hand_computed():
    logits = np.array([[[[0.0, np.log(3.0)]]]], np.float32)
    value, _, _ = _ce(logits, np.array([[[1]]]), label_smoothing=0.2)
    # target (0.1, 0.9): -(0.1 ln 1/4 + 0.9 ln 3/4)
    np.testing.assert_allclose(value, -(0.1 * np.log(0.25) + 0.9 * np.log(0.75)), rtol=1e-6)


def test_uniform_logits_give_ln_k():
    value, _, _ = _ce(np.zeros((2, 3, 4, 7), np.float32), np.random.randint(0, 7, (2, 3, 4)))
    np.testing.assert_allclose(value, np.log(7.0), rtol=1e-6)


def test_all_ignored_gives_zero_loss_and_zero_grad():
    labels = jnp.full((2, 3, 3), 255)

    def f(logits):
        loss, weight = losses.cross_entropy(logits, labels)
        return losses.weighted_mean(loss, weight)

    logits = jnp.asarray(np.random.randn(2, 3, 3, 4), jnp.float32)
    value, grad = jax.value_and_grad(f)(logits)
    assert float(value) == 0.0
    assert np.all(np.asarray(grad) == 0.0)


@pytest.mark.parametrize("garbage", [1e30, -1e30, 1e4])
def test_ignored_pixel_logits_do_not_change_loss_or_grad(garbage):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 2, 2, 3)).astype(np.float32)
    labels = np.array([[[0, 2], [255, 1]]])

    def f(x):
        loss, weight = losses.cross_entropy(x, jnp.asarray(labels))
        return losses.weighted_mean(loss, weight)

    other = logits.copy()
    other[0, 1, 0] = garbage
    v1, g1 = jax.value_and_grad(f)(jnp.asarray(logits))
    v2, g2 = jax.value_and_grad(f)(jnp.asarray(other))
    assert float(v1) == float(v2)
    np.testing.assert_array_equal(np.asarray(g1), np.asarray(g2))
    assert np.all(np.asarray(g2)[0, 1, 0] == 0.0)
