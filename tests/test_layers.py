"""The alternative formulations compute the same functions as the plain ones, and the
layers match PyTorch's numerics (padding, resize, adaptive pooling)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import layers
from tests.torch_support import assert_close_relative, torch


def _apply(module, x, **kw):
    variables = module.init(jax.random.key(0), x, **kw)
    return variables, module.apply(variables, x, **kw)


# Sides longer than the rate: smaller ones take the centre-tap path (the next test).
@pytest.mark.parametrize("rate,size", [(2, (16, 16)), (4, (13, 18)), (6, (7, 9)), (12, (20, 13))])
@pytest.mark.parametrize("groups", [1, 4])
def test_space_to_batch_atrous_equals_plain(rate, size, groups):
    x = jax.random.normal(jax.random.key(1), (2, *size, 8))
    plain = layers.Conv(12, 3, dilation=rate, groups=groups, use_bias=True)
    variables, expected = _apply(plain, x)
    fast = layers.Conv(
        12, 3, dilation=rate, groups=groups, use_bias=True, atrous_impl="space_to_batch"
    )
    np.testing.assert_allclose(fast.apply(variables, x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rate,size", [(12, (8, 8)), (12, (20, 11)), (4, (4, 9)), (2, (2, 2))])
@pytest.mark.parametrize("atrous_impl", layers.ATROUS_IMPLS)
def test_dilation_past_the_map_is_the_full_dilated_conv(rate, size, atrous_impl):
    """A side no longer than the rate takes only the kernel's centre along it: the same
    function as the full dilated convolution written out with lax."""
    x = jax.random.normal(jax.random.key(2), (2, *size, 8))
    conv = layers.Conv(12, 3, dilation=rate, groups=2, use_bias=True, atrous_impl=atrous_impl)
    variables, got = _apply(conv, x)
    p = variables["params"]
    expected = jax.lax.conv_general_dilated(
        x,
        p["kernel"],
        window_strides=(1, 1),
        padding=((rate, rate), (rate, rate)),
        rhs_dilation=(rate, rate),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=2,
    )
    np.testing.assert_allclose(got, expected + p["bias"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(4, 4), (5, 7)])
def test_depth_to_space_transpose_equals_plain_and_flax(size):
    x = jax.random.normal(jax.random.key(2), (2, *size, 6))
    variables, plain = _apply(layers.ConvTranspose2x2(5), x)
    fast = layers.ConvTranspose2x2(5, transpose_impl="depth_to_space").apply(variables, x)
    np.testing.assert_allclose(fast, plain, atol=1e-5, rtol=1e-5)
    import flax.linen as nn

    flax_out = nn.ConvTranspose(5, (2, 2), strides=(2, 2)).apply(variables, x)
    np.testing.assert_allclose(plain, flax_out, atol=1e-5, rtol=1e-5)
    assert plain.shape == (2, 2 * size[0], 2 * size[1], 5)


def test_mask_repeat_unpool_equals_scatter_and_keeps_first_max_on_ties():
    x = jax.random.normal(jax.random.key(3), (2, 8, 6, 3))
    x = x.at[:, :2, :2].set(1.0)  # a tie in the first window: torch keeps the first
    pooled, argmax = layers.max_pool_with_argmax(x)
    assert int(argmax[0, 0, 0, 0]) == 0
    a = layers.max_unpool(pooled, argmax, "scatter")
    b = layers.max_unpool(pooled, argmax, "mask_repeat")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pooled, x.reshape(2, 4, 2, 3, 2, 3).max((2, 4)))
    assert int((a != 0).sum()) == pooled.size  # one survivor per window
    # The gradient goes to the kept element only, as torch's (and Caffe's): [[1, 0], [0, 0]]
    # in the tied window, not 1/4 each.
    grad = jax.grad(lambda y: layers.max_pool_with_argmax(y)[0].sum())(x)
    np.testing.assert_array_equal(grad[0, :2, :2, 0], [[1.0, 0.0], [0.0, 0.0]])


def test_layers_match_torch():
    t = torch()
    F = t.nn.functional
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 11, 14, 5)).astype(np.float32)
    xt = t.from_numpy(x.transpose(0, 3, 1, 2))
    to_nhwc = lambda y: y.detach().numpy().transpose(0, 2, 3, 1)  # noqa: E731

    for kw in [dict(stride=2), dict(dilation=3), dict(stride=2, groups=5)]:
        conv = layers.Conv(10 if kw.get("groups", 1) == 1 else 5, 3, use_bias=True, **kw)
        variables, ours = _apply(conv, x)
        kernel = np.asarray(variables["params"]["kernel"]).transpose(3, 2, 0, 1)
        ref = F.conv2d(
            xt,
            t.from_numpy(kernel),
            t.from_numpy(np.asarray(variables["params"]["bias"])),
            stride=kw.get("stride", 1),
            padding=kw.get("dilation", 1),
            dilation=kw.get("dilation", 1),
            groups=kw.get("groups", 1),
        )
        assert_close_relative(ours, to_nhwc(ref), 1e-5)

    for size in [(22, 28), (7, 5), (3, 3)]:
        ref = F.interpolate(xt, size=size, mode="bilinear", align_corners=False)
        assert_close_relative(layers.resize(jnp.asarray(x), size), to_nhwc(ref), 1e-5)

    for bins in (1, 2, 3, 6):
        ref = F.adaptive_avg_pool2d(xt, bins)
        assert_close_relative(layers.adaptive_avg_pool(jnp.asarray(x), bins), to_nhwc(ref), 1e-5)

    pooled, argmax = layers.max_pool_with_argmax(jnp.asarray(x[:, :10, :14]))
    ref, idx = F.max_pool2d(xt[:, :, :10, :14], 2, return_indices=True)
    np.testing.assert_array_equal(pooled, to_nhwc(ref))
    unpooled = F.max_unpool2d(ref, idx, 2)
    np.testing.assert_array_equal(layers.max_unpool(pooled, argmax, "scatter"), to_nhwc(unpooled))
