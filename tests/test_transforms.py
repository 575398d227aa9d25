"""Joint image+mask transforms: alignment, label validity, determinism, mmseg semantics."""

import colorsys

import numpy as np
import pytest
from PIL import Image

from jaxseg.data import transforms as T

OFFSET = 1000  # coordinate labels start here, so none collides with ignore_index 255
STEP = 8  # image channels hold y * STEP and x * STEP (uint8 for sides up to 31)


def coordinate_example(height, width, step=1):
    """image u8[H,W,3] = (y * step, x * step, 7); mask i32[H,W] = OFFSET + y * W + x."""
    y, x = np.mgrid[:height, :width]
    image = np.stack([y * step, x * step, np.full_like(y, 7)], -1).astype(np.uint8)
    return image, (OFFSET + y * width + x).astype(np.int32)


def assert_exactly_aligned(image, mask, width, ignore_index=255):
    """Each mask label names the source pixel the image holds; padding is 0 / ignore."""
    pad = mask == ignore_index
    assert np.all(image[pad] == 0)
    src_y, src_x = np.divmod(mask[~pad] - OFFSET, width)
    np.testing.assert_array_equal(image[~pad][:, 0], src_y)
    np.testing.assert_array_equal(image[~pad][:, 1], src_x)
    np.testing.assert_array_equal(image[~pad][:, 2], 7)


def test_crop_flip_rot90_keep_image_and_mask_aligned():
    image, mask = coordinate_example(13, 17)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        for out in [
            T.random_crop(image, mask, rng, (8, 11)),
            T.random_crop(image, mask, rng, (20, 12)),  # padded in H, cropped in W
            T.hflip(image, mask),
            T.vflip(image, mask),
            *(T.rot90(image, mask, k) for k in range(4)),
            T.random_flip_rotate(image, mask, rng, hflip=True, vflip=True, rot90=True),
        ]:
            assert_exactly_aligned(*out, width=17)
    flipped = T.hflip(image, mask)[1]
    np.testing.assert_array_equal(flipped[:, 0], mask[:, -1])
    rotated = T.rot90(image, mask, 1)[1]
    assert rotated.shape == (17, 13)
    np.testing.assert_array_equal(rotated[0], mask[:, -1])  # counter-clockwise


def test_train_transform_geometry_is_aligned_without_scaling():
    image, mask = coordinate_example(10, 14)
    for seed in range(6):
        out_image, out_mask = T.train_transform(
            image,
            mask,
            np.random.default_rng(seed),
            crop_size=(12, 9),
            scale_range=None,
            cat_max_ratio=1.0,
            hflip=True,
            vflip=True,
            rot90=True,
            photometric=False,
            blur_prob=0.0,
            ignore_index=255,
        )
        assert out_image.shape == (12, 9, 3) and out_mask.shape == (12, 9)
        assert out_mask.dtype == np.int32 and out_image.dtype == np.uint8
        assert out_image.flags.c_contiguous and out_mask.flags.c_contiguous
        assert_exactly_aligned(out_image, out_mask, width=14)


def test_random_scale_mask_agrees_with_image_within_a_pixel():
    height, width = 30, 26
    image, mask = coordinate_example(height, width, STEP)
    shapes = set()
    for seed in range(8):
        out_image, out_mask = T.random_scale(image, mask, np.random.default_rng(seed), (0.4, 2.5))
        assert out_image.dtype == np.uint8 and out_mask.dtype == np.int32
        assert out_image.shape[:2] == out_mask.shape
        shapes.add(out_mask.shape)
        src_y, src_x = np.divmod(out_mask - OFFSET, width)
        # The bilinear image holds the (interpolated) source coordinate of each output pixel.
        assert np.abs(out_image[..., 0] / STEP - src_y).max() <= 1.0
        assert np.abs(out_image[..., 1] / STEP - src_x).max() <= 1.0
        assert np.isin(out_mask, mask).all()
    assert len(shapes) == 8  # the factor really is random


def test_random_scale_handles_any_channel_count():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    mask = rng.integers(0, 3, (9, 11)).astype(np.uint8)
    out_image, out_mask = T.random_scale(image, mask, rng, (2.0, 2.0))
    assert out_image.shape == (18, 22, 4) and out_mask.shape == (18, 22)
    assert out_mask.dtype == np.uint8
    np.testing.assert_array_equal(out_mask[::2, ::2], mask)  # exact 2x nearest


TRAIN_KW = dict(
    scale_range=(0.5, 2.0),
    cat_max_ratio=0.75,
    hflip=True,
    vflip=True,
    rot90=True,
    photometric=True,
    blur_prob=0.5,
    ignore_index=255,
)


@pytest.mark.parametrize("shape", [(40, 56), (12, 20)])  # the second always needs padding
def test_train_transform_mask_values_stay_classes_or_ignore(shape):
    num_classes = 5
    for seed in range(6):
        rng = np.random.default_rng(seed)
        mask = rng.integers(0, num_classes, shape)
        mask[rng.random(shape) < 0.1] = 255
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        out_image, out_mask = T.train_transform(image, mask, rng, crop_size=(24, 32), **TRAIN_KW)
        assert out_image.shape == (24, 32, 3) and out_image.dtype == np.uint8
        assert out_mask.shape == (24, 32) and out_mask.dtype == np.int32
        assert set(np.unique(out_mask)) <= set(range(num_classes)) | {255}


def test_train_transform_is_deterministic_given_the_seed():
    rng = np.random.default_rng(123)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    mask = rng.integers(0, 5, (30, 40))
    outs = [
        T.train_transform(image, mask, np.random.default_rng(s), crop_size=(16, 16), **TRAIN_KW)
        for s in (7, 7, 8)
    ]
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    assert not np.array_equal(outs[0][0], outs[2][0])


def test_cat_max_ratio_rejects_crops_dominated_by_one_class():
    mask = np.zeros((64, 64), np.int32)
    mask[22:42, 22:42] = 1  # ~10% class 1: some 16x16 crops are < 75% class 0, most are not
    mask[0:5, 0:5] = 255
    image = np.zeros((64, 64, 3), np.uint8)

    def max_share(crop):
        counts = np.bincount(crop[crop != 255].ravel())
        return counts.max() / counts.sum()

    plain = [
        max_share(T.random_crop(image, mask, np.random.default_rng(s), (16, 16))[1])
        for s in range(20)
    ]
    assert max(plain) > 0.75  # without the constraint, dominated crops do get chosen
    for seed in range(20):
        _, crop = T.random_crop(
            image, mask, np.random.default_rng(seed), (16, 16), cat_max_ratio=0.75, tries=30
        )
        assert max_share(crop) <= 0.75


def test_photometric_keeps_dtype_shape_and_gray():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    gray = np.repeat(rng.integers(0, 256, (16, 20, 1), dtype=np.uint8), 3, axis=-1)
    changed = False
    for seed in range(12):
        out = T.photometric(image, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == image.shape
        changed |= not np.array_equal(out, image)
        out_gray = T.photometric(gray, np.random.default_rng(seed))
        assert (out_gray.max(-1).astype(int) - out_gray.min(-1)).max() <= 1
    assert changed
    # Saturation and hue alone (brightness/contrast off) leave a gray image as it was.
    only_color = dict(brightness=0, contrast=(1.0, 1.0))
    for seed in range(12):
        out_gray = T.photometric(gray, np.random.default_rng(seed), **only_color)
        np.testing.assert_array_equal(out_gray, gray)


def _mmseg_photometric(
    image, rng, brightness=32, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=18
):
    """mmseg's PhotoMetricDistortion written out step by step, each step truncated to uint8,
    HSV in exact floats (colorsys) instead of OpenCV's 8-bit HSV; T.photometric's draws."""

    def convert(x, alpha=1.0, beta=0.0):
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    out = image
    if rng.integers(2):
        out = convert(out, beta=rng.uniform(-brightness, brightness))

    def apply_contrast(x):
        return convert(x, alpha=rng.uniform(*contrast)) if rng.integers(2) else x

    contrast_first = bool(rng.integers(2))
    if contrast_first:
        out = apply_contrast(out)
    sat_on = bool(rng.integers(2))
    alpha = rng.uniform(*saturation) if sat_on else 1.0
    hue_on = bool(rng.integers(2))
    shift = int(rng.integers(-hue, hue + 1)) if hue_on else 0
    if sat_on or hue_on:
        hsv_out = np.empty(out.shape, np.float64)
        for y, x in np.ndindex(out.shape[:2]):
            h, s, v = colorsys.rgb_to_hsv(*(out[y, x] / 255.0))
            rgb = colorsys.hsv_to_rgb((h + shift / 180.0) % 1.0, min(s * alpha, 1.0), v)
            hsv_out[y, x] = np.asarray(rgb) * 255.0
        out = np.floor(hsv_out + 0.5).astype(np.uint8)  # OpenCV's HSV -> RGB rounds
    if not contrast_first:
        out = apply_contrast(out)
    return out


def test_photometric_is_mmsegs_in_uint8():
    image = np.random.default_rng(1).integers(0, 256, (24, 30, 3), dtype=np.uint8)
    differing = 0.0
    for seed in range(24):
        out = T.photometric(image, np.random.default_rng(seed))
        ref = _mmseg_photometric(image, np.random.default_rng(seed))
        # Exact but where float32 and float64 break a tie at .5 differently (integer inputs
        # often land on one after a hue shift), and a later contrast step carries it on.
        diff = np.abs(out.astype(int) - ref)
        assert diff.max() <= 2 and (diff > 0).mean() < 0.05, (seed, diff.max())
        differing += (diff > 0).mean() / 24
    assert differing < 0.005


def _rescale_then_crop(image, mask, rng, crop, scale_range, ignore_index, cat_max_ratio):
    """The reference: mmseg's RandomResize (by a factor of the example's own size) then
    RandomCrop, written here: Pillow's bilinear on the whole image channel by channel, the
    mask by nearest neighbour at the pixel centres floor((i + 0.5) * in / out), padding at
    the bottom/right (image 0, mask ignore_index), crops redrawn up to 10 times while one
    class covers cat_max_ratio or more of the non-ignored pixels."""
    scale = rng.uniform(*scale_range)
    h, w = max(1, round(mask.shape[0] * scale)), max(1, round(mask.shape[1] * scale))
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c])).resize((w, h), 2))
        for c in range(image.shape[2])
    ]  # 2: Image.BILINEAR
    rows = ((np.arange(h) + 0.5) * mask.shape[0] / h).astype(int)
    cols = ((np.arange(w) + 0.5) * mask.shape[1] / w).astype(int)
    ph, pw = max(h, crop[0]), max(w, crop[1])
    big = np.zeros((ph, pw, image.shape[2]), np.uint8)
    big[:h, :w] = np.stack(planes, -1)
    big_mask = np.full((ph, pw), ignore_index, mask.dtype)
    big_mask[:h, :w] = mask[rows][:, cols]
    for _ in range(11):  # one draw and ten redraws
        top, left = int(rng.integers(0, ph - crop[0] + 1)), int(rng.integers(0, pw - crop[1] + 1))
        kept = big_mask[top : top + crop[0], left : left + crop[1]]
        labels, counts = np.unique(kept[kept != ignore_index], return_counts=True)
        if cat_max_ratio >= 1.0 or (
            len(labels) > 1 and counts.max() / counts.sum() < cat_max_ratio
        ):
            break
    window = (slice(top, top + crop[0]), slice(left, left + crop[1]))
    return big[window], big_mask[window]


def test_scaled_crop_is_rescale_then_crop():
    """The crop-first path against resizing the whole example with Pillow and cropping,
    written in the test (_rescale_then_crop), same draws."""
    rng = np.random.default_rng(0)
    worst, differing, total = 0, 0, 0
    for trial in range(40):
        shape = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
        channels = (1, 3, 4)[trial % 3]
        image = rng.integers(0, 256, (*shape, channels), dtype=np.uint8)
        mask = rng.integers(0, 6, shape).astype((np.uint8, np.int32)[trial % 2])
        crop = (int(rng.integers(8, 64)), int(rng.integers(8, 64)))
        kw = dict(ignore_index=255, cat_max_ratio=(1.0, 0.6)[trial % 2])
        fast = T.scaled_crop(
            image, mask, np.random.default_rng(trial), crop, scale_range=(0.5, 2.0), **kw
        )
        ref = _rescale_then_crop(image, mask, np.random.default_rng(trial), crop, (0.5, 2.0), **kw)
        np.testing.assert_array_equal(fast[1], ref[1])
        assert fast[1].dtype == mask.dtype and fast[0].shape == ref[0].shape
        diff = np.abs(fast[0].astype(int) - ref[0])
        worst, differing, total = (
            max(worst, diff.max()),
            differing + (diff > 0).sum(),
            total + diff.size,
        )
    assert worst <= 2 and differing / total < 0.15, (worst, differing / total)


def test_resize_reads_only_the_box_surroundings():
    """_resize_image hands Pillow only the pixels around the box; the result is Pillow's
    box resize of the whole image up to its coefficients' rounding (shifted by an integer
    offset, a few flip): 1 level, on about 5 % of the pixels."""
    rng = np.random.default_rng(0)
    differing = total = 0
    for trial in range(60):
        h, w = (int(v) for v in rng.integers(20, 200, 2))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out_h, out_w = (int(v) for v in rng.integers(4, 90, 2))
        scale = rng.uniform(0.3, 3.0)
        x0, y0 = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
        box = (x0, y0, min(w, x0 + out_w / scale), min(h, y0 + out_h / scale))
        ref = np.asarray(Image.fromarray(image).resize((out_w, out_h), Image.BILINEAR, box=box))
        got = T._resize_image(image, (out_h, out_w), box=box)
        diff = np.abs(got.astype(int) - ref)
        assert diff.max() <= 1, trial
        differing, total = differing + (diff > 0).sum(), total + diff.size
    assert 0 < differing / total < 0.08, differing / total


def test_cubic_matrix():
    m = T.cubic_matrix(9, 3)
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(m[[0, 4, 8]], np.eye(3), atol=1e-12)  # through the grid nodes
    big = T.cubic_matrix(41, 6)  # cubic convolution reproduces straight lines inside
    np.testing.assert_allclose((big @ np.arange(6.0))[8:33], np.arange(8, 33) * 5 / 40, atol=1e-9)


def test_elastic_moves_image_and_mask_together():
    image, mask = coordinate_example(48, 40)  # image channels hold (y, x, 7)
    assert T.elastic(image, mask, np.random.default_rng(0), sigma=0.0) == (image, mask)
    moved = 0
    for seed in range(6):
        out_image, out_mask = T.elastic(image, mask, np.random.default_rng(seed), sigma=4.0)
        assert out_image.shape == image.shape and out_mask.dtype == mask.dtype
        assert np.isin(out_mask, mask).all()  # labels moved, never invented
        src_y, src_x = np.divmod(out_mask - OFFSET, 40)
        # The nearest source pixel and the bilinear sample are at most a pixel apart.
        assert np.abs(out_image[..., 0].astype(int) - src_y).max() <= 1
        assert np.abs(out_image[..., 1].astype(int) - src_x).max() <= 1
        moved += (out_mask != mask).mean()
    assert moved / 6 > 0.5


def test_elastic_field_statistics():
    fields = np.stack(
        [T.elastic_field(np.random.default_rng(s), (33, 17), 10.0, 3) for s in range(400)]
    )
    # At the lattice nodes (corners, centre) the displacement is the N(0, 10) draw itself.
    nodes = fields[:, :, [0, 0, 16, 32, 32], [0, 16, 8, 0, 16]]
    assert abs(nodes.std() - 10.0) < 0.6 and abs(nodes.mean()) < 0.6
    assert fields.shape == (400, 2, 33, 17) and fields.dtype == np.float32


def test_gaussian_blur():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 15, 3), dtype=np.uint8)
    assert T.gaussian_blur(image, rng, prob=0.0) is image
    flat = np.full((12, 15, 3), 77, np.uint8)
    np.testing.assert_array_equal(T.gaussian_blur(flat, rng, prob=1.0), flat)
    blurred = T.gaussian_blur(image, rng, prob=1.0, sigma=(1.5, 1.5))
    assert blurred.dtype == np.uint8 and blurred.shape == image.shape
    assert blurred.astype(float).std() < image.astype(float).std()


def test_resize_shorter_side():
    rng = np.random.default_rng(0)
    mask = rng.choice(np.array([0, 3, 9, 255]), (30, 50))
    image = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    out_image, out_mask = T.resize_shorter_side(image, mask, 20)
    assert out_image.shape == (20, 33, 3) and out_mask.shape == (20, 33)
    assert out_image.dtype == np.uint8 and out_mask.dtype == mask.dtype
    assert set(np.unique(out_mask)) <= {0, 3, 9, 255}
    out_image, out_mask = T.resize_shorter_side(image.transpose(1, 0, 2), mask.T, 60)
    assert out_image.shape == (100, 60, 3) and out_mask.shape == (100, 60)
    np.testing.assert_array_equal(out_mask[::2, ::2], mask.T)  # exact 2x nearest
