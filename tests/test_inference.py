"""jaxseg.inference against plain loops (tests/reference_inference.py, no jaxseg helper):
MMSeg's slide_inference, one window at a time, and its test-time augmentation, one view at a
time, resized by F.interpolate's bilinear formula."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import inference, sharding
from jaxseg.models import build_model
from tests import reference_inference as R

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def unet():
    model = build_model("unet", 3, base_width=4, depth=2)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
    # Random BatchNorm statistics, so that windows and padding visibly matter.
    rng = np.random.default_rng(0)
    stats = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.asarray(
            rng.uniform(0.5, 1.5, x.shape)
            if path[-1].key == "var"
            else rng.normal(0, 0.1, x.shape),
            x.dtype,
        ),
        variables["batch_stats"],
    )
    return model, {"params": variables["params"], "batch_stats": stats}


def slide_reference(model, variables, image, crop, stride):
    """MMSeg's slide_inference for one image u8[h,w,3] (tests/reference_inference.py)."""
    x = R.normalised(image, MEAN, STD)
    return R.slide(R.forward(model, variables), x, crop, stride)


def _run(model, variables, images, sizes=None, mesh=None, **settings):
    s = inference.Settings(**settings)
    fn = functools.partial(
        inference.scores,
        model=model,
        mean=MEAN,
        std=STD,
        settings=s,
        window_sharding=sharding.batch_sharding(mesh) if mesh else None,
    )
    sizes = None if sizes is None else jnp.asarray(sizes, jnp.int32)
    return np.asarray(jax.jit(fn)(variables, jnp.asarray(images), sizes))


@pytest.mark.parametrize(
    "sizes, crop, stride, window_batch",
    [
        ([(23, 37), (23, 37)], (16, 16), (10, 10), 8),  # overlaps, last window pulled back
        ([(23, 37), (12, 30)], (16, 16), (11, 7), 8),  # mixed sizes; one smaller than crop
        ([(9, 11), (20, 16)], (16, 16), (16, 16), 3),  # window_batch not dividing the count
    ],
)
def test_slide_equals_mmseg_loop(unet, sizes, crop, stride, window_batch):
    model, variables = unet
    rng = np.random.default_rng(1)
    canvas = (max(s[0] for s in sizes), max(s[1] for s in sizes))
    images = np.zeros((len(sizes), *canvas, 3), np.uint8)
    for b, (h, w) in enumerate(sizes):
        images[b, :h, :w] = rng.integers(0, 256, (h, w, 3))
        images[b, h:, :] = 255  # whatever lies beyond an image must not leak into it
        images[b, :, w:] = 255
    got = _run(
        model,
        variables,
        images,
        sizes,
        mode="slide",
        crop_size=crop,
        stride=stride,
        window_batch=window_batch,
    )
    assert got.shape == (len(sizes), *canvas, 3)
    for b, (h, w) in enumerate(sizes):
        want = slide_reference(model, variables, images[b, :h, :w], crop, stride)
        np.testing.assert_allclose(got[b, :h, :w], want, atol=1e-5, rtol=0)
    # Windows matter: the slide result is not the whole-image result.
    whole = _run(model, variables, images[:1, : sizes[0][0], : sizes[0][1]])
    assert np.abs(whole[0] - got[0, : sizes[0][0], : sizes[0][1]]).max() > 1e-3


def test_slide_windows_sharded_over_eight_devices_equal_one(unet):
    model, variables = unet
    images = np.random.default_rng(2).integers(0, 256, (8, 20, 28, 3), np.uint8)
    settings = dict(mode="slide", crop_size=(16, 16), stride=(8, 8), window_batch=8)
    mesh = sharding.make_mesh()
    assert mesh.devices.size == 8
    eight = _run(model, variables, images, mesh=mesh, **settings)
    one = _run(model, variables, images, **settings)
    np.testing.assert_allclose(eight, one, atol=1e-5, rtol=0)


def test_multiscale_flip_averages_softmax_of_every_view(unet):
    model, variables = unet
    images = np.random.default_rng(3).integers(0, 256, (2, 21, 26, 3), np.uint8)
    scales = (0.5, 0.75, 1.0, 1.25)
    got = _run(model, variables, images, scales=scales, flip=True)
    for b in range(2):
        x = R.normalised(images[b], MEAN, STD)
        want = R.tta(R.forward(model, variables), x, scales, flip=True)
        np.testing.assert_allclose(np.exp(got[b]), want, atol=1e-5, rtol=0)
    # The flip view really differs (the model is not mirror-symmetric).
    no_flip = _run(model, variables, images, scales=scales)
    assert np.abs(np.exp(no_flip) - np.exp(got)).max() > 1e-3


def test_single_view_is_the_models_logits(unet):
    model, variables = unet
    images = np.random.default_rng(4).integers(0, 256, (2, 19, 24, 3), np.uint8)
    got = _run(model, variables, images)
    logits = R.forward(model, variables)
    want = np.stack([logits(R.normalised(im, MEAN, STD)) for im in images])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_slide_with_tta_on_a_smaller_image_in_the_batch(unet):
    """Slide + flip per image: a smaller image's flip mirrors its own columns."""
    model, variables = unet
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (2, 20, 30, 3), np.uint8)
    sizes = [(20, 30), (20, 22)]
    settings = dict(mode="slide", crop_size=(16, 16), stride=(8, 8), flip=True)
    got = _run(model, variables, images, sizes, **settings)
    alone = _run(model, variables, images[1:, :, :22], **settings)
    np.testing.assert_allclose(got[1, :, :22], alone[0], atol=1e-5, rtol=0)


def test_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="eval.mode='tiles'"):
        inference.Settings(mode="tiles")
    with pytest.raises(ValueError, match="larger than eval.crop_size"):
        inference.Settings(mode="slide", crop_size=(8, 8), stride=(9, 4))
    with pytest.raises(ValueError, match="eval.scales"):
        inference.Settings(scales=(0.0,))
