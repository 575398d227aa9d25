"""Dense CRF: the windowed mean field equals a brute-force dense one when the window covers
the image, it sharpens a blurred prediction along a colour edge, and parameters are checked."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.crf import CRFError, CRFParams, mean_field


def _dense_reference(probs, image, p: CRFParams):
    """Every pixel pair, written out with numpy: the definition of the dense CRF's mean field."""
    b, h, w, k = probs.shape
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pos = np.stack([ys.ravel(), xs.ravel()], -1).astype(np.float64)
    d2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    out = []
    for n in range(b):
        col = image[n].reshape(-1, image.shape[-1]).astype(np.float64)
        c2 = ((col[:, None] - col[None]) ** 2).sum(-1)
        kern = p.bilateral_weight * np.exp(
            -d2 / (2 * p.bilateral_xy_std**2) - c2 / (2 * p.bilateral_rgb_std**2)
        ) + p.spatial_weight * np.exp(-d2 / (2 * p.spatial_xy_std**2))
        np.fill_diagonal(kern, 0.0)
        unary = np.log(probs[n].reshape(-1, k).astype(np.float64))
        q = probs[n].reshape(-1, k).astype(np.float64)
        for _ in range(p.iterations):
            logits = unary + kern @ q
            q = np.exp(logits - logits.max(-1, keepdims=True))
            q /= q.sum(-1, keepdims=True)
        out.append(q.reshape(h, w, k))
    return np.stack(out)


def test_window_covering_the_image_equals_the_dense_crf():
    rng = np.random.default_rng(0)
    h, w = 7, 9
    image = rng.integers(0, 256, (2, h, w, 3)).astype(np.uint8)
    probs = rng.dirichlet(np.ones(4), (2, h, w)).astype(np.float32)
    # window 2 * max(h, w) - 1 reaches every pixel from every pixel.
    params = CRFParams(1.5, 4.0, 40.0, 1.0, 2.0, iterations=5, window=2 * max(h, w) - 1)
    ours = jax.jit(mean_field, static_argnums=2)(probs, image, params)
    np.testing.assert_allclose(ours, _dense_reference(probs, image, params), atol=2e-5)
    # A smaller window is another (truncated) function.
    small = jax.jit(mean_field, static_argnums=2)(
        probs, image, CRFParams(1.5, 4.0, 40.0, 1.0, 2.0, iterations=5, window=3)
    )
    assert np.abs(np.asarray(small) - ours).max() > 1e-3


@pytest.mark.slow
def test_crf_sharpens_a_blurred_prediction_at_a_colour_edge():
    h, w = 12, 16
    image = np.zeros((1, h, w, 3), np.uint8)
    image[:, :, w // 2 :] = 200  # left dark, right bright: class 0 left, class 1 right
    truth = (np.arange(w) >= w // 2).astype(np.int32)[None, None].repeat(h, 1)
    # A prediction that bleeds 4 pixels across the edge: soft and wrong there.
    ramp = np.clip((np.arange(w) - (w // 2 - 4)) / 8.0, 0.05, 0.95)
    probs = np.stack([1 - ramp, ramp], -1)[None, None].repeat(h, 1).astype(np.float32)
    before = (probs.argmax(-1) == truth).mean()
    q = mean_field(jnp.asarray(probs), jnp.asarray(image), CRFParams(5, 10, 10, 1, 1, 10, 9))
    after = (np.asarray(q).argmax(-1) == truth).mean()
    assert after == 1.0 and before < 1.0


# base_config's eval.crf_* defaults (DeepLab-LargeFOV's), spelled out: CRFParams has none.
DEFAULTS = dict(
    bilateral_weight=4.0,
    bilateral_xy_std=121.0,
    bilateral_rgb_std=5.0,
    spatial_weight=3.0,
    spatial_xy_std=3.0,
    iterations=10,
    window=11,
)


@pytest.mark.parametrize(
    "bad",
    [
        dict(window=4),
        dict(window=1),
        dict(spatial_xy_std=0.0),
        dict(bilateral_rgb_std=-1.0),
        dict(iterations=0),
        dict(bilateral_weight=-0.5),
        dict(spatial_weight=float("nan")),
        dict(bilateral_weight=0.0, spatial_weight=0.0),
    ],
)
def test_invalid_parameters_raise_naming_the_field(bad):
    field = next(iter(bad))
    with pytest.raises(CRFError, match=f"crf {field}:") as info:
        CRFParams(**(DEFAULTS | bad))
    assert info.value.field == field


def test_inference_scores_apply_the_crf_to_the_final_probabilities():
    from jaxseg import inference
    from jaxseg.models import build_model

    model = build_model("linear", 3)
    x = np.random.default_rng(0).integers(0, 256, (2, 10, 12, 3)).astype(np.uint8)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 10, 12, 3))))
    rng = np.random.default_rng(1)
    variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), variables)
    params = CRFParams(**(DEFAULTS | dict(iterations=3, window=5)))
    kw = dict(model=model, mean=(0.5,) * 3, std=(0.25,) * 3)
    plain = inference.scores(variables, jnp.asarray(x), **kw)
    refined = inference.scores(
        variables, jnp.asarray(x), settings=inference.Settings(crf=params), **kw
    )
    expected = mean_field(jax.nn.softmax(plain, -1), jnp.asarray(x), params)
    np.testing.assert_allclose(jnp.exp(refined), expected, atol=1e-6)
    assert np.abs(np.asarray(expected) - np.asarray(jax.nn.softmax(plain, -1))).max() > 1e-2
    assert inference.Settings(crf=params).describe()["crf"]["window"] == 5
