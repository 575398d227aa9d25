"""Augmentation in the train step (jaxseg.augment) against the host path
(jaxseg.data.transforms): the same arithmetic given the same draws, the same
distributions, the same batch on 1 and 8 devices, exact resume."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import augment as A
from jaxseg import cli, configs, sharding
from jaxseg.data import appearance, deform, pipeline
from jaxseg.data import transforms as T
from jaxseg.data.augment_spec import AugmentSpec
from jaxseg.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _canvas(image, mask, canvas):
    return pipeline.pad_to_size(image, mask, canvas, 255)


# The seven operations both backends run, host op and device op given the same draws:
# op -> (draw(rng) -> parameters, host(image, mask, p), device(image, mask, p), tolerance).
# The image is compared as u8 levels: (largest difference, largest share of pixels that
# differ at all); the mask is compared exactly (nearest neighbour, labels only moved).
_noise = np.random.default_rng(0)
IMAGE = _noise.integers(0, 256, (36, 36, 3), np.uint8)
MASK = _noise.integers(0, 5, (36, 36)).astype(np.int32)
CROP = (24, 30)


def _draw_crop(rng):
    s = rng.uniform(0.5, 2.0)
    scaled = (max(1, round(36 * s)), max(1, round(36 * s)))
    span = (max(scaled[0], CROP[0]) - CROP[0] + 1, max(scaled[1], CROP[1]) - CROP[1] + 1)
    return scaled, (int(rng.integers(span[0])), int(rng.integers(span[1])))


def _device_crop(image, mask, p):
    canvas = pipeline.pad_to_size(np.asarray(image), np.asarray(mask), (48, 40), 255)
    return A.crop_at(*map(jnp.asarray, canvas), (36, 36), *p, AugmentSpec(crop_size=CROP))


def _draw_photometric(rng):  # every step on (each off draw skips one jnp.where)
    return appearance.PhotometricDraw(
        rng.uniform(-32, 32), bool(rng.integers(2)), rng.uniform(0.5, 1.5),
        rng.uniform(0.5, 1.5), int(rng.integers(-18, 19)),
    )  # fmt: skip


def _device_photometric(image, mask, p):
    on = (p.beta is not None, p.contrast_first, p.alpha is not None)
    on += (p.sat_alpha is not None, p.hue_shift is not None)
    values = (p.beta or 0.0, p.alpha or 1.0, p.sat_alpha or 1.0, p.hue_shift or 0)
    return A.photometric_at(image, tuple(map(jnp.asarray, on)), *values), mask


def _rot_in(image, mask, k):  # even turns on a non-square image (a non-square crop's)
    return (image, mask) if k % 2 else (image[:, :30], mask[:, :30])


def _turned(image, mask, k, hflip=False):
    """The reference for flips and turns, by index arithmetic: a quarter turn
    counter-clockwise takes out[r, c] = in[c, W - 1 - r]; k of them, then a left-right
    mirror (a top-bottom flip is two turns and a mirror)."""
    for _ in range(k % 4):
        w = image.shape[1]
        r, c = np.mgrid[: image.shape[1], : image.shape[0]]
        image, mask = image[c, w - 1 - r], mask[c, w - 1 - r]
    if hflip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return image, mask


def test_host_flips_and_turns_are_the_index_arithmetic():
    for k in range(4):
        for got, want in zip(
            T.rot90(IMAGE[:, :30], MASK[:, :30], k),
            _turned(IMAGE[:, :30], MASK[:, :30], k),
            strict=True,
        ):
            np.testing.assert_array_equal(got, want)
    for got, want in zip(
        (*T.hflip(IMAGE, MASK), *T.vflip(IMAGE, MASK)),
        (*_turned(IMAGE, MASK, 0, True), *_turned(IMAGE, MASK, 2, True)),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(_turned(IMAGE, MASK, 1)[1], np.rot90(MASK, -1))  # the sense


EXACT = (0, 0.0)
PARITY = {
    "rescale_crop": (
        _draw_crop,
        lambda image, mask, p: T.crop_at(image, mask, *p, CROP, 255),
        _device_crop,
        (1, 0.35),  # Pillow rounds to u8 between its two passes; the device once
    ),
    "hflip": (lambda rng: None, lambda i, m, p: _turned(i, m, 0, hflip=True),
              lambda i, m, p: A.flip_rotate_at(i, m, h=jnp.bool_(True)), EXACT),
    "vflip": (lambda rng: None, lambda i, m, p: _turned(i, m, 2, hflip=True),
              lambda i, m, p: A.flip_rotate_at(i, m, v=jnp.bool_(True)), EXACT),
    "rot90": (lambda rng: int(rng.integers(4)), lambda i, m, k: _turned(*_rot_in(i, m, k), k),
              lambda i, m, k: A.flip_rotate_at(*_rot_in(i, m, k), k=jnp.int32(k)), EXACT),
    "elastic": (
        lambda rng: rng.normal(0.0, 4.0, (2, 3, 3)),
        deform.elastic_at,
        lambda i, m, p: A.elastic_at(i, m, jnp.asarray(p, jnp.float32)),
        (1, 0.005),  # the field in f64 on the host, f32 on the device
    ),
    "photometric": (
        _draw_photometric,
        lambda i, m, p: (appearance.photometric_at(i, p), m),
        _device_photometric,
        # Ties at .5 in saturation and hue break either way in numpy and XLA (1 level), and
        # a contrast step after them scales that by up to 1.5.
        (2, 0.01),
    ),
    "blur": (
        lambda rng: rng.uniform(*appearance.BLUR_SIGMA),
        lambda i, m, s: (appearance.blur_at(i, s), m),
        lambda i, m, s: (A.blur(i, s, 6), m),
        (1, 0.005),  # scipy's kernel in f64, the device's in f32
    ),
}  # fmt: skip


@pytest.mark.parametrize("op", sorted(PARITY))
def test_host_and_device_ops_agree_given_the_same_draws(op):
    draw, host, device, (levels, share) = PARITY[op]
    for seed in range(8):  # rot90 draws k = 3, 1, 3, 3, 2, 2, 1, 3
        p = draw(np.random.default_rng(seed))
        ref_image, ref_mask = host(IMAGE, MASK, p)
        out = device(jnp.asarray(IMAGE, jnp.float32), jnp.asarray(MASK), p)
        out_image, out_mask = (np.asarray(v) for v in out)
        np.testing.assert_array_equal(out_mask, ref_mask)
        assert out_image.shape == ref_image.shape
        diff = np.abs(out_image.astype(int) - ref_image.astype(int))
        assert diff.max() <= levels and (diff > 0).mean() <= share, (op, seed, diff.max())


def _coordinates(height=24, width=32):
    """image channels (y * 8, x * 8, 100); mask y * width + x + 1 (labels, no 255)."""
    y, x = np.mgrid[:height, :width]
    image = np.stack([y * 8, x * 8, np.full_like(y, 100)], -1).astype(np.uint8)
    return image, (y * width + x + 1).astype(np.int32)


def _statistics(images, masks, width=32):
    """Per draw: padding share, horizontally flipped, source columns covered, mean value."""
    pad = masks == 255
    labels = np.where(pad, 0, masks - 1)
    cols = labels % width
    # Flipped: the source column falls from left to right along a row of real pixels.
    real = ~pad[:, :, 1:] & ~pad[:, :, :-1]
    flipped = np.array([np.diff(c, axis=1)[r].mean() < 0 for c, r in zip(cols, real, strict=True)])
    covered = np.array([len(np.unique(c[~p])) for c, p in zip(cols, pad, strict=True)])
    return pad.mean((1, 2)), flipped, covered, images.astype(float).mean((1, 2, 3))


def test_distributions_match_the_host_path():
    image, mask = _coordinates()
    n = 400
    kw = dict(crop_size=(16, 16), scale_range=(0.5, 2.0), hflip=True, photometric=True)
    host = [T.train_transform(image, mask, np.random.default_rng(i), **kw) for i in range(n)]
    opts = AugmentSpec(**kw)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(n))
    dev = jax.jit(jax.vmap(functools.partial(A.augment_example, opts=opts), (0, None, None, None)))(
        keys, jnp.asarray(image), jnp.asarray(mask), jnp.asarray([24, 32])
    )
    h_stats = _statistics(np.stack([h[0] for h in host]), np.stack([h[1] for h in host]))
    d_stats = _statistics(np.asarray(dev[0]), np.asarray(dev[1]))
    for name, h, d in zip(
        ("padding", "flipped", "columns", "brightness"), h_stats, d_stats, strict=True
    ):
        spread = np.sqrt((h.var() + d.var()) / n) + 1e-9
        assert abs(h.mean() - d.mean()) < 4 * spread, (name, h.mean(), d.mean())
    # The photometric draws widen the spread of the brightness (its mean barely moves).
    assert 0.85 < d_stats[3].std() / h_stats[3].std() < 1.18
    assert 0.4 < d_stats[1].mean() < 0.6 and d_stats[0].mean() > 0.01  # both really vary


def test_same_batch_on_one_and_eight_devices():
    rng = np.random.default_rng(3)
    batch = {
        "image": rng.integers(0, 256, (8, 20, 24, 3), dtype=np.uint8),
        "mask": rng.integers(0, 5, (8, 20, 24)).astype(np.uint8),
        "size": np.array([[20, 24], [17, 19]] * 4, np.int32),
    }
    opts = AugmentSpec(
        crop_size=(12, 12), scale_range=(0.5, 2.0), vflip=True, rot90=True,
        elastic_sigma=2.0, photometric=True, blur_prob=0.5,
    )  # fmt: skip
    outs = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = sharding.make_mesh(devices)
        fn = jax.jit(
            functools.partial(A.augment_batch, opts=opts),
            in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
        )
        outs.append(jax.device_get(fn(jax.random.key(7), batch)))
    np.testing.assert_array_equal(outs[0]["image"], outs[1]["image"])
    np.testing.assert_array_equal(outs[0]["mask"], outs[1]["mask"])
    assert outs[0]["image"].shape == (8, 12, 12, 3) and outs[0]["mask"].dtype == np.int32
    assert not np.array_equal(outs[0]["image"][0], outs[0]["image"][2])  # per-example keys


def test_canvas_prep_pads_and_shrinks_what_does_not_fit(caplog):
    prep = pipeline.CanvasPrep(canvas=(10, 12), num_classes=3, ignore_index=255)
    small = prep.map({"image": np.ones((6, 7, 3), np.uint8), "mask": np.ones((6, 7), np.uint8)})
    assert small["image"].shape == (10, 12, 3) and small["size"].tolist() == [6, 7]
    assert (small["mask"][6:] == 255).all() and (small["image"][:, 7:] == 0).all()
    big = prep.map(
        {"image": np.ones((20, 12, 3), np.uint8), "mask": np.ones((20, 12), np.uint8), "name": "b"}
    )
    assert big["size"].tolist() == [10, 6] and "b: 20x12 is larger" in caplog.text


def test_device_path_trains_and_resumes_exactly(tmp_path):
    config = cli.load_experiment(
        os.path.join(ROOT, "experiments", "linear.py"),
        "--config.data.image_size=(16, 16)",
        "--config.data.num_val=8",
        "--config.batch_size=8",
        "--config.eval.batch_size=8",
        "--config.eval.size=(16, 16)",
        "--config.total_steps=4",
        "--config.log_every=2",
        "--config.eval_every=4",
        "--config.checkpoint_every=2",
        "--config.augment.backend=device",
        "--config.augment.canvas_size=(24, 24)",
        "--config.augment.scale_range=(0.5, 2.0)",
        "--config.augment.photometric=True",
    )
    straight = train_and_evaluate(config, str(tmp_path / "straight"))
    assert train_and_evaluate(config, str(tmp_path / "resumed"), stop_after=2)["step"] == 2
    resumed = train_and_evaluate(config, str(tmp_path / "resumed"))
    jax.tree.map(
        np.testing.assert_array_equal,
        jax.device_get(straight["state"].params),
        jax.device_get(resumed["state"].params),
    )


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "--config.augment.canvas_size=(64, 64)",
            "canvas_size is set but augment.backend is 'host'",
        ),
        ("--config.augment.elastic_grid=4", "elastic_grid is set but augment.elastic_sigma is 0"),
        ("--config.augment.backend=gpu", "augment.backend='gpu' is unknown"),
        ("--config.loader.repeat_threshold=2.0", "repeat_threshold=2.0 is a share"),
    ],
)
def test_augmentation_options_that_would_not_act_are_refused(override, message):
    from jaxseg import config_checks

    config = cli.load_experiment(os.path.join(ROOT, "experiments", "unet.py"), override)
    with pytest.raises(configs.ConfigError, match=message):
        config_checks.check_options(config)
    config = cli.load_experiment(
        os.path.join(ROOT, "experiments", "unet.py"),
        "--config.augment.backend=device",
        "--config.augment.cat_max_ratio=0.75",
    )
    with pytest.raises(configs.ConfigError, match="cat_max_ratio redraws crops on the host"):
        config_checks.check_options(config)
