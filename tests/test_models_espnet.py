"""ESPNet / ESPNet-C: parameter counts against the paper, shapes at odd sizes, and the fast
formulations (space-to-batch dilations, depth-to-space transposed convs) equal to the plain."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.espnet import ESP, ESPNet
from jaxseg.state import count_params


def _shapes(model, x):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def test_counts():
    x = jnp.zeros((1, 64, 64, 3))
    espnet = count_params(_shapes(ESPNet(20), x)["params"])
    # Mehta et al. 2018, Table 1 / Sec. 4: ESPNet (alpha2 = 2, alpha3 = 8) has 0.364 M
    # parameters for Cityscapes' 20 classes (19 + background).
    assert espnet == 365_109 and abs(espnet / 364_000 - 1) < 0.03
    # ESPNet-C with the release's p=2, q=8 (train/main.py): ESPNet without its decoder.
    assert count_params(_shapes(ESPNet(20, "espnet_c"), x)["params"]) == 349_449
    # An ESP module (64 -> 64): 1x1 64->12, 3x3 12->16 (d1), four 3x3 12->12, BN + PReLU.
    y = jnp.zeros((1, 16, 16, 64))
    esp = count_params(jax.eval_shape(lambda: ESP(64).init(jax.random.key(0), y, False))["params"])
    assert esp == 64 * 12 + 9 * 12 * 16 + 4 * 9 * 12 * 12 + 3 * 64


@pytest.mark.parametrize("variant", ["espnet", "espnet_c"])
def test_logits_at_odd_size(variant):
    x = jnp.zeros((2, 37, 45, 3))
    model = ESPNet(5, variant, dtype=jnp.bfloat16)
    logits, aux = jax.eval_shape(lambda v: model.apply(v, x), _shapes(model, x))
    assert logits.shape == (2, 37, 45, 5) and logits.dtype == jnp.float32 and aux == {}
    with pytest.raises(ValueError, match="variant"):
        _shapes(ESPNet(5, "espnet_d"), x)


@pytest.mark.slow  # ~10-30 s on 2 shared cores
def test_fast_formulations_give_the_same_logits():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 35, 41, 3)), jnp.float32)
    plain = ESPNet(5, atrous_impl="plain", transpose_impl="plain")
    rng = np.random.default_rng(1)
    variables = jax.tree.map(
        lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype), _shapes(plain, x)
    )
    a, _ = jax.jit(plain.apply)(variables, x)
    b, _ = jax.jit(
        plain.clone(atrous_impl="space_to_batch", transpose_impl="depth_to_space").apply
    )(variables, x)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(jnp.abs(a).max()))
