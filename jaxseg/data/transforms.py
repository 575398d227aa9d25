"""Joint image+mask augmentations on the host, deterministic given a np.random.Generator.

Every function takes image u8[H,W,C] and/or mask int[H,W] and returns new arrays; geometric
ops always move image and mask together, masks only ever use nearest neighbour, and padding
fills masks with ignore_index. train_transform chains them in mmseg's order:
scale -> crop -> flips/rot90 -> elastic -> photometric -> blur.

Speed (docs/benchmarks.md, "Input pipeline"): the work stays in uint8. The random scale
resizes only the pixels the crop keeps (Pillow's resize with a source box), masks are
resized by index arithmetic in their own dtype, and the photometric changes are lookup
tables plus HSV's saturation and hue arithmetic done in RGB in one float32 pass.

Resampling uses pixel centres (align_corners=False) for both the bilinear image and the
nearest mask, so the two stay aligned to within half a source pixel.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image
from scipy import ndimage

from jaxseg.data import images

# ----------------------------------------------------------------------------- resizing


def _resize_image(image: np.ndarray, size: tuple[int, int], box=None) -> np.ndarray:
    """Bilinear resize of u8[H,W,C] (or the source box (x0, y0, x1, y1) of it, in pixels) to
    u8[h,w,C] with Pillow, antialiased when shrinking."""
    height, width = size
    if box is None and image.shape[:2] == (height, width):
        return image.copy()
    if box is not None:  # hand Pillow only the pixels the box's filter windows read
        image, box = _around(image, box, (height, width))
    if images.is_grey(image):  # one channel resized, three shown
        return images.as_rgb(_resize_image(image[..., :1], size, box)[..., 0])
    channels = image.shape[2]
    if channels in (1, 3):
        mode_image = Image.fromarray(
            np.ascontiguousarray(image if channels == 3 else image[..., 0])
        )
        out = np.asarray(mode_image.resize((width, height), Image.BILINEAR, box=box))
        return out if channels == 3 else out[..., None]
    # Pillow has no generic C-channel u8 mode, and RGBA resizes premultiplied: go per channel.
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c])).resize(
                (width, height), Image.BILINEAR, box=box
            )
        )
        for c in range(channels)
    ]
    return np.stack(planes, axis=-1)


def _around(image: np.ndarray, box, size: tuple[int, int]):
    """(the part of image [H,W,C] that a bilinear resize of `box` to `size` reads, the box
    in its coordinates). Pillow's antialiased window reaches max(1, box / size) pixels
    beyond a sample's centre and rounds outward; two more pixels of margin keep every
    window whole: the resize is the whole image's up to its coefficients' float rounding
    (1 level on about 5 % of the pixels, tested), while
    Image.fromarray copies only this part: a quarter of a 1024x2048 photo at scale 1."""
    x0, y0, x1, y1 = box
    reach_y = int(np.ceil(max(1.0, (y1 - y0) / size[0]))) + 2
    reach_x = int(np.ceil(max(1.0, (x1 - x0) / size[1]))) + 2
    top, left = max(0, int(y0) - reach_y), max(0, int(x0) - reach_x)
    bottom = min(image.shape[0], int(np.ceil(y1)) + reach_y)
    right = min(image.shape[1], int(np.ceil(x1)) + reach_x)
    return image[top:bottom, left:right], (x0 - left, y0 - top, x1 - left, y1 - top)


def nearest_index(src: int, dst: int) -> np.ndarray:
    """i64[dst]: the source index of each output pixel centre when resizing src -> dst, the
    mapping Pillow's bilinear uses, so mask labels land where the image content does."""
    # floor((i + 0.5) * src / dst) in integers: exact, and the same on the device.
    return np.minimum((2 * np.arange(dst) + 1) * src // (2 * dst), src - 1)


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of int[H,W] to int[h,w]; values and dtype are kept."""
    rows = nearest_index(mask.shape[0], size[0])
    cols = nearest_index(mask.shape[1], size[1])
    return mask.take(rows, axis=0).take(cols, axis=1)


def resize(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]):
    """Resizes image u8[H,W,C] (bilinear) and mask int[H,W] (nearest) to size (h, w)."""
    size = (int(size[0]), int(size[1]))
    return _resize_image(image, size), _resize_mask(mask, size)


def random_scale(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, scale_range=(0.5, 2.0)
):
    """Rescales image u8[H,W,C] and mask int[H,W] by one factor ~ U(scale_range).

    The factor is relative to the example's own size (mmseg's RandomResize uses a base
    scale instead). Returns (u8[h,w,C], int[h,w]) with h = round(H * s), w = round(W * s);
    dtypes are kept.
    """
    scale = rng.uniform(scale_range[0], scale_range[1])
    height, width = mask.shape
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return resize(image, mask, size)


def resize_shorter_side(image: np.ndarray, mask: np.ndarray, shorter: int):
    """Evaluation resize: the shorter side becomes `shorter`, aspect ratio kept.

    image u8[H,W,C] bilinear, mask int[H,W] nearest (only values already present).
    """
    height, width = mask.shape
    scale = shorter / min(height, width)
    if height <= width:
        size = (shorter, max(1, round(width * scale)))
    else:
        size = (max(1, round(height * scale)), shorter)
    return resize(image, mask, size)


# ------------------------------------------------------------------------------ cropping


def _pad(image: np.ndarray, mask: np.ndarray, size: tuple[int, int], ignore_index: int):
    # Bottom/right, like pipeline.pad_to_size, so padded pixels never shift the content.
    pad_h, pad_w = max(0, size[0] - mask.shape[0]), max(0, size[1] - mask.shape[1])
    if pad_h or pad_w:
        if images.is_grey(image):  # one channel padded, three shown
            image = images.as_rgb(np.pad(image[..., 0], ((0, pad_h), (0, pad_w))))
        else:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
        mask = np.pad(mask, ((0, pad_h), (0, pad_w)), constant_values=ignore_index)
    return image, mask


def random_crop(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int],
    *,
    ignore_index: int = 255,
    cat_max_ratio: float = 1.0,
    tries: int = 10,
):
    """Crops (u8[h,w,C], int[h,w]) with (h, w) = size at a random position.

    An example smaller than size is padded first (image 0, mask ignore_index). With
    cat_max_ratio < 1 this is mmseg's RandomCrop: a crop is redrawn (checked up to `tries`
    times) unless it holds more than one class and its most frequent class covers less than
    cat_max_ratio of its non-ignored pixels; if no checked crop passes, the last draw is used.
    """
    crop_h, crop_w = int(size[0]), int(size[1])
    image, mask = _pad(image, mask, (crop_h, crop_w), ignore_index)
    height, width = mask.shape

    def draw():
        return int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))

    top, left = draw()
    if cat_max_ratio < 1.0:
        for _ in range(tries):
            labels, counts = np.unique(
                mask[top : top + crop_h, left : left + crop_w], return_counts=True
            )
            counts = counts[labels != ignore_index]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            top, left = draw()
    return (
        image[top : top + crop_h, left : left + crop_w],
        mask[top : top + crop_h, left : left + crop_w],
    )


def _crop_mask_share(crop: np.ndarray, ignore_index: int) -> float:
    """The most frequent class's share of the non-ignored pixels of crop (1.0 when it holds
    fewer than two classes), from one bincount when the labels are small integers."""
    flat = crop.ravel()
    if crop.dtype == np.uint8 or (flat.size and flat.min() >= 0 and flat.max() < 65536):
        counts = np.bincount(flat, minlength=ignore_index + 1 if ignore_index >= 0 else 1)
        if 0 <= ignore_index < counts.size:
            counts[ignore_index] = 0
    else:
        labels, counts = np.unique(flat, return_counts=True)
        counts = counts[labels != ignore_index]
    counts = counts[counts > 0]
    return 1.0 if len(counts) < 2 else counts.max() / counts.sum()


def scaled_crop(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int],
    *,
    scale_range=None,
    ignore_index: int = 255,
    cat_max_ratio: float = 1.0,
    tries: int = 10,
):
    """random_scale then random_crop (the same draws, in the same order), computing only the
    pixels the crop keeps: (u8[h,w,C], int[h,w]) with (h, w) = size, mask dtype kept.

    The mask is exactly what rescaling the whole mask and cropping gives. The image is
    Pillow's bilinear resize of the source box under the crop; against resizing the whole
    image and cropping it differs only by the rounding of Pillow's fixed-point filter
    weights: by at most 2 levels, on a few percent of the pixels (1 % on 300x410 noise,
    8 % on the small noise images of tests/test_transforms.py).
    scale_range None (or (1, 1)) skips the rescale and draws no factor.
    """
    crop_h, crop_w = int(size[0]), int(size[1])
    src_h, src_w = mask.shape
    height, width = src_h, src_w
    if scale_range is not None and tuple(scale_range) != (1.0, 1.0):
        scale = rng.uniform(scale_range[0], scale_range[1])
        height, width = max(1, round(src_h * scale)), max(1, round(src_w * scale))
    rows, cols = nearest_index(src_h, height), nearest_index(src_w, width)

    # Crop origins in the rescaled frame, padded at the bottom/right to at least the crop.
    span_h, span_w = max(height, crop_h) - crop_h + 1, max(width, crop_w) - crop_w + 1

    def draw():
        return int(rng.integers(0, span_h)), int(rng.integers(0, span_w))

    def window(top, left):  # the part of the crop inside the rescaled image
        return top, min(top + crop_h, height), left, min(left + crop_w, width)

    top, left = draw()
    if cat_max_ratio < 1.0:
        for _ in range(tries):
            y0, y1, x0, x1 = window(top, left)
            inside = mask.take(rows[y0:y1], axis=0).take(cols[x0:x1], axis=1)
            # The padding is ignore_index, so the share over the inside is the crop's share.
            if _crop_mask_share(inside, ignore_index) < cat_max_ratio:
                break
            top, left = draw()
    y0, y1, x0, x1 = window(top, left)
    out_mask = mask.take(rows[y0:y1], axis=0).take(cols[x0:x1], axis=1)
    if (height, width) == (src_h, src_w):
        out_image = image[y0:y1, x0:x1]
    else:
        sy, sx = src_h / height, src_w / width
        box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        out_image = _resize_image(image, (y1 - y0, x1 - x0), box=box)
    return _pad(out_image, out_mask, (crop_h, crop_w), ignore_index)


# ----------------------------------------------------------------------- flips, rotation


def hflip(image: np.ndarray, mask: np.ndarray):
    """Left-right flip of image [H,W,C] and mask [H,W] (views)."""
    return image[:, ::-1], mask[:, ::-1]


def vflip(image: np.ndarray, mask: np.ndarray):
    """Top-bottom flip of image [H,W,C] and mask [H,W] (views)."""
    return image[::-1], mask[::-1]


def rot90(image: np.ndarray, mask: np.ndarray, k: int):
    """Rotates image [H,W,C] and mask [H,W] by k * 90 degrees counter-clockwise (views).

    Odd k swaps H and W.
    """
    return np.rot90(image, k, axes=(0, 1)), np.rot90(mask, k, axes=(0, 1))


def random_flip_rotate(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    hflip: bool = True,
    vflip: bool = False,
    rot90: bool = False,
    keep_shape: bool = False,
):
    """Each enabled op with probability 1/2 (rot90: k uniform in 0..3), in that order.

    With keep_shape and H != W, rot90 draws k from {0, 2} so the shape is kept (what a
    fixed crop size needs). The random draws do not depend on the image.
    """
    if hflip and rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if vflip and rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    if rot90:
        k = int(rng.integers(4))
        if keep_shape and mask.shape[0] != mask.shape[1]:
            k = (k % 2) * 2
        image, mask = np.rot90(image, k, axes=(0, 1)), np.rot90(mask, k, axes=(0, 1))
    return image, mask


# --------------------------------------------------------------------------- photometric


def _convert_lut(lut: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    # mmseg's PhotoMetricDistortion.convert on a table: x * alpha + beta, clipped to
    # [0, 255] and truncated to uint8 after every step.
    return np.clip(lut.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


IDENTITY_LUT = np.arange(256, dtype=np.uint8)


def _apply_lut(image: np.ndarray, lut: np.ndarray) -> np.ndarray:
    if lut is IDENTITY_LUT:
        return image
    if images.is_grey(image):
        return images.as_rgb(np.take(lut, image[..., 0]))
    return np.take(lut, image)


def _saturation_hue(image: np.ndarray, alpha: float, shift: float) -> np.ndarray:
    """Saturation times alpha (clipped to 1) and hue plus `shift` sextants (6 = 360 degrees)
    of u8[H,W,3] RGB, value kept: HSV's arithmetic done in RGB without a round trip, on
    float32 planes; rounded to u8 once (half up), as OpenCV's HSV -> RGB rounds.

    Speed (2.2x an earlier version, docs/benchmarks.md): contiguous planes; only the ops numpy
    runs at memory speed (multiply, add, min, max, floor; choices as arithmetic blends,
    since np.where, np.mod and masked ops cost 20-70x a multiply on data-dependent masks);
    results written into a few buffers, since each fresh multi-megabyte temporary costs
    its page faults again."""
    # moveaxis + astype reads a flipped (negative-stride) crop 5x faster than reshape does
    planes = np.moveaxis(image, -1, 0).astype(np.float32, order="C").reshape(3, -1)
    r, g, b = planes
    value = np.maximum(r, g)
    np.maximum(value, b, out=value)
    chroma = np.minimum(r, g)
    np.minimum(chroma, b, out=chroma)
    np.subtract(value, chroma, out=chroma)
    inverse = np.maximum(chroma, 0.5)  # chroma is 0 or >= 1; at 0 all numerators are 0
    np.reciprocal(inverse, out=inverse)
    k, t = np.empty_like(value), np.empty_like(value)
    if shift == 0.0:  # saturation alone: each channel moves along its line to the value
        np.multiply(chroma, alpha, out=k)
        np.minimum(k, value, out=k)
        k *= inverse  # the gain
        value_half = np.add(value, 0.5, out=inverse)  # the cast truncates: round half up
        for plane in planes:
            np.subtract(plane, value, out=t)
            t *= k
            np.add(t, value_half, out=plane)
        return _interleave(planes, image.shape)
    # Hue in sextants, [-1, 5): OpenCV takes red when it ties for the maximum, then green.
    is_r = (value == r).view(np.uint8)
    is_g = (value == g).view(np.uint8) > is_r
    hue = np.subtract(r, g)  # blue is the maximum: (r - g) / chroma + 4
    hue *= inverse
    hue += 4.0
    for pick, (x, y, offset) in ((is_g, (b, r, 2.0)), (is_r.view(np.bool_), (g, b, 0.0))):
        np.subtract(x, y, out=k)  # hue += pick * ((x - y) / chroma + offset - hue)
        k *= inverse
        k += offset
        k -= hue
        k *= pick
        hue += k
    hue += shift + 12.0  # hue mod 6, kept positive for the floor
    np.multiply(hue, 1.0 / 6.0, out=t)
    np.floor(t, out=t)
    t *= 6.0
    hue -= t
    np.multiply(chroma, alpha, out=chroma)
    np.minimum(chroma, value, out=chroma)
    np.subtract(value, chroma, out=value)  # the minimum after the saturation change
    value += 0.5  # the cast truncates: round half up
    # HSV -> RGB: each channel is the minimum plus chroma times a trapezoid of the hue:
    # red |h - 3| - 1, green 2 - |h - 2|, blue 2 - |h - 4|, each clipped to [0, 1].
    for plane, centre, sign in zip(planes, (3.0, 2.0, 4.0), (1, -1, -1), strict=True):
        np.subtract(hue, centre, out=k)
        np.abs(k, out=k)
        if sign > 0:
            k -= 1.0
        else:
            np.subtract(2.0, k, out=k)
        np.clip(k, 0.0, 1.0, out=k)
        k *= chroma
        np.add(value, k, out=plane)
    return _interleave(planes, image.shape)


def _interleave(planes: np.ndarray, shape) -> np.ndarray:
    """f32[3,N] planes, already offset by 0.5, as u8[*shape] truncated."""
    out = np.empty((planes.shape[1], 3), np.uint8)
    for i in range(3):
        out[:, i] = planes[i]
    return out.reshape(shape)


def photometric(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    brightness: float = 32,
    contrast=(0.5, 1.5),
    saturation=(0.5, 1.5),
    hue: int = 18,
) -> np.ndarray:
    """mmseg's PhotoMetricDistortion on image u8[H,W,C]; returns u8[H,W,C].

    Brightness (add U(-brightness, brightness)), then with a coin flip either contrast
    first or last around saturation (multiply S by U(saturation)) and hue (shift by an
    integer in [-hue, hue] in OpenCV's 0..180 units); each step applies with probability
    1/2. Contrast multiplies pixel values (no mean centring), as in mmseg. Saturation and
    hue only apply to 3-channel (RGB) images, and change nothing on grey ones.

    Everything stays uint8, as in mmseg: brightness and contrast are lookup tables that
    clip and truncate after every step as mmseg does; saturation and hue are HSV's
    arithmetic done in RGB in one pass (mmseg rounds to OpenCV's 8-bit HSV in between,
    which moves values by up to a few levels; tests/test_transforms.py compares with
    colorsys).
    """
    rgb = image.ndim == 3 and image.shape[2] == 3
    before = IDENTITY_LUT
    if rng.integers(2):
        before = _convert_lut(before, beta=rng.uniform(-brightness, brightness))

    def contrast_lut(lut):
        if rng.integers(2):
            lut = _convert_lut(lut, alpha=rng.uniform(contrast[0], contrast[1]))
        return lut

    contrast_first = bool(rng.integers(2))
    if contrast_first:
        before = contrast_lut(before)
    sat_on = bool(rng.integers(2))
    sat_alpha = rng.uniform(saturation[0], saturation[1]) if sat_on else 1.0
    hue_on = bool(rng.integers(2))
    hue_shift = int(rng.integers(-hue, hue + 1)) if hue_on else 0
    after = IDENTITY_LUT if contrast_first else contrast_lut(IDENTITY_LUT)
    out = _apply_lut(image, before)
    if rgb and (sat_on or hue_on) and not _is_grey(out):
        out = _saturation_hue(out, sat_alpha, hue_shift / 30.0)  # 30 OpenCV units a sextant
    return _apply_lut(out, after)


def _is_grey(image: np.ndarray) -> bool:
    """True when every pixel of u8[H,W,3] has R == G == B (saturation 0, hue undefined)."""
    return images.is_grey(image) or bool(
        np.array_equal(image[..., 0], image[..., 1])
        and np.array_equal(image[..., 1], image[..., 2])
    )


_photometric = photometric  # train_transform's `photometric` flag shadows the function


def gaussian_blur(
    image: np.ndarray, rng: np.random.Generator, *, prob: float = 0.0, sigma=(0.1, 2.0)
) -> np.ndarray:
    """With probability prob, a Gaussian blur with sigma ~ U(sigma) (scipy.ndimage, kernel
    truncated at 3 sigma, mirrored edges); u8[H,W,C] in and out. prob 0 draws nothing."""
    if prob <= 0.0 or rng.random() >= prob:
        return image
    s = rng.uniform(sigma[0], sigma[1])
    out = ndimage.gaussian_filter(
        image.astype(np.float32), sigma=(s, s, 0), mode="mirror", truncate=3.0
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- elastic


@functools.lru_cache(maxsize=16)
def cubic_matrix(n_out: int, n_in: int) -> np.ndarray:
    """f64[n_out, n_in]: cubic convolution (Keys, a = -0.5) from n_in grid points to n_out
    samples, the end points of both aligned (sample i sits at i * (n_in - 1) / (n_out - 1)),
    indices beyond the grid clamped to its edge. The same matrix serves the host and the
    device elastic deformation."""
    out = np.zeros((n_out, n_in))
    positions = np.arange(n_out) * ((n_in - 1) / max(n_out - 1, 1))
    for i, p in enumerate(positions):
        base = int(np.floor(p))
        for j in range(base - 1, base + 3):
            d = abs(p - j)
            w = (1.5 * d - 2.5) * d * d + 1 if d <= 1 else ((-0.5 * d + 2.5) * d - 4) * d + 2
            if d < 2:
                out[i, min(max(j, 0), n_in - 1)] += w
    return out


def elastic_field(rng: np.random.Generator, size: tuple[int, int], sigma: float, grid: int):
    """f32[2,h,w] displacements (rows, columns) in pixels: N(0, sigma) on a grid x grid
    lattice spread over the image, interpolated bicubically (Ronneberger et al. 2015)."""
    coarse = rng.normal(0.0, sigma, (2, grid, grid))
    rows, cols = cubic_matrix(size[0], grid), cubic_matrix(size[1], grid)
    return np.stack([rows @ coarse[c] @ cols.T for c in range(2)]).astype(np.float32)


def elastic(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    sigma: float = 10.0,
    grid: int = 3,
):
    """The U-Net paper's elastic deformation of image u8[H,W,C] and mask int[H,W] together:
    warp by the field of elastic_field. sigma 0 draws nothing and returns the inputs."""
    if sigma <= 0:
        return image, mask
    out, out_mask = warp(image, mask, elastic_field(rng, mask.shape, sigma, grid))
    return out.astype(np.uint8), out_mask


def warp(image, mask, field, xp=np):
    """image u8[H,W,C] resampled bilinearly and mask int[H,W] by nearest neighbour (no label
    invented), both at (y + field[0], x + field[1]), edges replicated. Returns the image
    rounded to integer values in float32 (and the mask). xp: numpy here, jax.numpy in the
    train step (jaxseg.augment), so both paths share this arithmetic."""
    height, width = mask.shape
    y = xp.clip(xp.arange(height, dtype=xp.float32)[:, None] + field[0], 0, height - 1)
    x = xp.clip(xp.arange(width, dtype=xp.float32)[None, :] + field[1], 0, width - 1)
    # Clamping the coordinates is replicating the edge. Nearest rounds half up.
    out_mask = mask[xp.floor(y + 0.5).astype(xp.int32), xp.floor(x + 0.5).astype(xp.int32)]
    y0, x0 = xp.floor(y), xp.floor(x)
    fy, fx = (y - y0)[..., None], (x - x0)[..., None]
    y0, x0 = y0.astype(xp.int32), x0.astype(xp.int32)
    y1, x1 = xp.minimum(y0 + 1, height - 1), xp.minimum(x0 + 1, width - 1)
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return xp.floor(top * (1 - fy) + bottom * fy + 0.5), out_mask


# ----------------------------------------------------------------------------- the chain


def train_transform(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    crop_size: tuple[int, int],
    scale_range=(1.0, 1.0),
    cat_max_ratio: float = 1.0,
    hflip: bool = True,
    vflip: bool = False,
    rot90: bool = False,
    elastic_sigma: float = 0.0,
    elastic_grid: int = 3,
    photometric: bool = False,
    blur_prob: float = 0.0,
    ignore_index: int = 255,
):
    """The training chain: scale -> crop -> flips/rot90 -> elastic -> photometric -> blur
    (mmseg's order, with the U-Net paper's elastic deformation where geometry ends).

    image u8[H,W,C], mask int[H,W] -> (u8[crop_h,crop_w,C], i32[crop_h,crop_w]), both
    C-contiguous. scale_range None skips scaling. rot90 on a non-square crop only rotates
    by 0 or 180 degrees so the output shape is fixed. Mask values are only moved or padded
    with ignore_index, never invented, so a checked input stays valid. The mask keeps its
    own (small) dtype until the end.
    """
    image, mask = scaled_crop(
        image,
        mask,
        rng,
        tuple(crop_size),
        scale_range=scale_range,
        ignore_index=ignore_index,
        cat_max_ratio=cat_max_ratio,
    )
    image, mask = random_flip_rotate(
        image, mask, rng, hflip=hflip, vflip=vflip, rot90=rot90, keep_shape=True
    )
    image, mask = elastic(image, mask, rng, sigma=elastic_sigma, grid=elastic_grid)
    if photometric:
        image = _photometric(image, rng)
    image = gaussian_blur(image, rng, prob=blur_prob)
    if images.is_grey(image):  # stacking is 5x faster than copying the stride-0 view
        image = np.stack([image[..., 0]] * image.shape[-1], axis=-1)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask, dtype=np.int32)
