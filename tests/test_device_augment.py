"""Augmentation in the train step (jaxseg.augment) against the host path
(jaxseg.data.transforms): the same arithmetic given the same draws, the same
distributions, the same batch on 1 and 8 devices, exact resume."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from jaxseg import augment as A
from jaxseg import cli, configs, sharding
from jaxseg.data import pipeline
from jaxseg.data import transforms as T
from jaxseg.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _canvas(image, mask, canvas):
    return pipeline.pad_to_size(image, mask, canvas, 255)


@pytest.mark.parametrize(
    "scaled,origin",
    [((37, 53), (3, 5)), ((20, 29), (0, 0)), ((74, 106), (40, 70)), ((15, 20), (0, 0))],
)
def test_crop_at_is_pillows_resize_then_crop(scaled, origin):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    mask = rng.integers(0, 5, (37, 53)).astype(np.uint8)
    opts = A.Options(crop_size=(24, 30))
    out, out_mask = A.crop_at(*map(jnp.asarray, _canvas(image, mask, (48, 64))), (37, 53),
                              scaled, origin, opts)  # fmt: skip
    (top, left), (h, w) = origin, scaled
    full = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    full_mask = T.resize(image, mask, (h, w))[1]
    ref, ref_mask = T._pad(
        full[top : top + 24, left : left + 30],
        full_mask[top : top + 24, left : left + 30].astype(np.int32),
        (24, 30),
        255,
    )
    np.testing.assert_array_equal(np.asarray(out_mask), ref_mask)  # nearest: exact
    # Pillow rounds to u8 between its horizontal and vertical passes; we round once.
    assert np.abs(np.asarray(out).astype(int) - ref).max() <= 1


def test_saturation_hue_is_the_hosts():
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    for alpha, shift in [(1.0, 0), (1.3, 0), (0.6, 7), (1.4, -18), (0.5, 18)]:
        host = T._saturation_hue(image, alpha, shift / 30)
        device = np.asarray(A.saturation_hue(jnp.asarray(image, jnp.float32), alpha, shift / 30))
        diff = np.abs(host.astype(int) - device)
        # Ties at .5 (integer inputs) break either way between numpy and XLA arithmetic.
        assert diff.max() <= 1 and (diff > 0).mean() < 0.08


def test_field_warp_and_blur_are_the_hosts():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (33, 41, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (33, 41)).astype(np.int32)
    coarse = rng.normal(0, 3.0, (2, 3, 3)).astype(np.float32)
    field = np.asarray(A.field_from(jnp.asarray(coarse), (33, 41)))
    np.testing.assert_allclose(
        field,
        np.stack([T.cubic_matrix(33, 3) @ coarse[c] @ T.cubic_matrix(41, 3).T for c in (0, 1)]),
        atol=1e-4,
    )
    host = T.warp(image, mask, field)
    device = T.warp(jnp.asarray(image, jnp.float32), jnp.asarray(mask), jnp.asarray(field), xp=jnp)
    np.testing.assert_array_equal(np.asarray(device[1]), host[1])
    assert np.abs(np.asarray(device[0]).astype(int) - host[0]).max() <= 1
    for s in (0.3, 1.0, 1.9):
        ref = ndimage.gaussian_filter(
            image.astype(np.float32), (s, s, 0), mode="mirror", truncate=3.0
        )
        out = A.blur(jnp.asarray(image, jnp.float32), s, 6)
        assert np.abs(np.asarray(out) - np.floor(ref + 0.5)).max() <= 1


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
    opts = A.Options(**kw)
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
    opts = A.Options(
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
        ("--config.augment.backend=gpu", "augment_on='gpu' is unknown"),
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
