import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.models import build_model
from jaxseg.optim import decay_mask, make_optimizer, make_schedule


def test_poly_schedule_with_warmup_hand_computed():
    s = make_schedule("poly", 0.1, 110, warmup_steps=10, poly_power=0.9)
    np.testing.assert_allclose([s(0), s(5), s(10)], [0.0, 0.05, 0.1], rtol=1e-6)
    # after warmup: lr * (1 - t / 100) ** 0.9 with t = step - 10
    np.testing.assert_allclose(s(60), 0.1 * 0.5**0.9, rtol=1e-6)
    np.testing.assert_allclose(s(110), 0.0, atol=1e-9)


def test_cosine_schedule_hand_computed():
    s = make_schedule("cosine", 1.0, 100, warmup_steps=0)
    np.testing.assert_allclose([s(0), s(50), s(100)], [1.0, 0.5, 0.0], atol=1e-6)


def test_unknown_names_list_valid():
    with pytest.raises(ValueError, match="valid: constant, cosine, poly"):
        make_schedule("step", 0.1, 10)
    with pytest.raises(ValueError, match="valid: adamw, sgd"):
        make_optimizer("adam", 0.1)


def test_no_weight_decay_on_batchnorm_and_biases():
    model = build_model("unet", 3, base_width=4, depth=1)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    flat = {
        "/".join(k.key for k in path): v
        for path, v in jax.tree_util.tree_leaves_with_path(decay_mask(params))
    }
    assert flat["DoubleConv_0/Conv_0/kernel"] and flat["ConvTranspose2x2_0/kernel"]
    assert not flat["DoubleConv_0/BatchNorm_0/scale"] and not flat["DoubleConv_0/BatchNorm_0/bias"]
    assert not flat["Conv_0/bias"]


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_decay_only_moves_masked_params(name):
    # Zero gradients: only weight decay changes parameters, and only the kernels.
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    tx = make_optimizer(name, 0.1, weight_decay=0.5, momentum=0.0)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert np.all(np.asarray(updates["bias"]) == 0)
    np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)


def test_nesterov_and_clipping():
    params = {"w": jnp.zeros((3,))}
    grads = {"w": jnp.array([30.0, 40.0, 0.0])}  # norm 50
    tx = make_optimizer("sgd", 1.0, momentum=0.9, nesterov=True, grad_clip=5.0)
    updates, _ = tx.update(grads, tx.init(params), params)
    # clipped to norm 5: (3, 4, 0); Nesterov first step: g + 0.9 * g = 1.9 g
    np.testing.assert_allclose(updates["w"], -1.9 * np.array([3.0, 4.0, 0.0]), rtol=1e-6)
    assert optax.tree.norm(updates) > 0
