"""Joint image+mask augmentations in numpy, deterministic given a np.random.Generator.

Every function takes image u8[H,W,C] and/or mask int[H,W] and returns new arrays; geometric
ops always move image and mask together, masks only ever use nearest neighbour, and padding
fills masks with ignore_index. train_transform chains them in mmseg's order:
scale -> crop -> flips/rot90 -> photometric -> blur.

Resampling uses pixel centres (align_corners=False) for both the bilinear image and the
nearest mask, so the two stay aligned to within half a source pixel.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# ----------------------------------------------------------------------------- resizing


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of u8[H,W,C] to u8[h,w,C] with Pillow (antialiased when shrinking)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image.copy()
    if image.shape[2] == 3:
        return np.asarray(
            Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.BILINEAR)
        )
    # Pillow has no generic C-channel u8 mode, and RGBA resizes premultiplied: go per channel.
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c])).resize(
                (width, height), Image.BILINEAR
            )
        )
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=-1)


def _nearest_index(src: int, dst: int) -> np.ndarray:
    # Source index of each output pixel centre: the same mapping Pillow's bilinear uses,
    # so mask labels land where the image content does.
    return np.minimum(((np.arange(dst) + 0.5) * (src / dst)).astype(np.int64), src - 1)


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of int[H,W] to int[h,w]; values and dtype are kept."""
    rows = _nearest_index(mask.shape[0], size[0])
    cols = _nearest_index(mask.shape[1], size[1])
    return mask[rows[:, None], cols[None, :]]


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


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """f32[...,3] RGB in [0,255] -> HSV with h in [0,1), s in [0,1], v in [0,255]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(-1)
    delta = value - rgb.min(-1)
    sat = np.where(value > 0, delta / np.maximum(value, 1e-12), 0.0)
    safe = np.maximum(delta, 1e-12)
    hue = np.where(
        value == r, (g - b) / safe, np.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    )
    hue = np.where(delta > 0, (hue / 6.0) % 1.0, 0.0)
    return np.stack([hue, sat, value], -1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of _rgb_to_hsv; s == 0 gives exactly (v, v, v)."""
    hue, sat, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = np.floor(hue * 6.0)
    frac = hue * 6.0 - sector
    sector = sector.astype(np.int64) % 6
    p = value * (1.0 - sat)
    q = value * (1.0 - sat * frac)
    t = value * (1.0 - sat * (1.0 - frac))
    choices = [
        (value, t, p),
        (q, value, p),
        (p, value, t),
        (p, q, value),
        (t, p, value),
        (value, p, q),
    ]
    out = [np.choose(sector, [c[i] for c in choices]) for i in range(3)]
    return np.stack(out, -1)


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
    hue only apply to 3-channel (RGB) images. The work is done in float32, clipped to
    [0, 255] after every step as mmseg does, and rounded once at the end (mmseg truncates
    after every step).
    """
    out = image.astype(np.float32)
    rgb = image.ndim == 3 and image.shape[2] == 3

    def apply_contrast(x):
        if rng.integers(2):
            x = np.clip(x * rng.uniform(contrast[0], contrast[1]), 0, 255)
        return x

    if rng.integers(2):
        out = np.clip(out + rng.uniform(-brightness, brightness), 0, 255)
    contrast_first = bool(rng.integers(2))
    if contrast_first:
        out = apply_contrast(out)
    sat_on = bool(rng.integers(2))
    sat_alpha = rng.uniform(saturation[0], saturation[1]) if sat_on else 1.0
    hue_on = bool(rng.integers(2))
    hue_shift = int(rng.integers(-hue, hue + 1)) if hue_on else 0
    if rgb and (sat_on or hue_on):
        hsv = _rgb_to_hsv(out)
        hsv[..., 1] = np.clip(hsv[..., 1] * sat_alpha, 0.0, 1.0)
        hsv[..., 0] = (hsv[..., 0] + hue_shift / 180.0) % 1.0
        out = np.clip(_hsv_to_rgb(hsv), 0, 255)
    if not contrast_first:
        out = apply_contrast(out)
    return np.rint(out).astype(np.uint8)


_photometric = photometric  # train_transform's `photometric` flag shadows the function


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _convolve_axis(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    radius = len(kernel) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(x, pad, mode="reflect" if x.shape[axis] > 1 else "edge")
    n = x.shape[axis]
    out = np.zeros_like(x)
    for i, w in enumerate(kernel):
        out += w * np.take(padded, np.arange(i, i + n), axis=axis)
    return out


def gaussian_blur(
    image: np.ndarray, rng: np.random.Generator, *, prob: float = 0.0, sigma=(0.1, 2.0)
) -> np.ndarray:
    """With probability prob, a separable Gaussian blur with sigma ~ U(sigma); u8[H,W,C] in
    and out (reflect padding). prob 0 draws nothing from rng."""
    if prob <= 0.0 or rng.random() >= prob:
        return image
    kernel = _gaussian_kernel(rng.uniform(sigma[0], sigma[1]))
    out = _convolve_axis(image.astype(np.float32), kernel, 0)
    out = _convolve_axis(out, kernel, 1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


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
    photometric: bool = False,
    blur_prob: float = 0.0,
    ignore_index: int = 255,
):
    """The training chain in mmseg's order: scale -> crop -> flips/rot90 -> photometric -> blur.

    image u8[H,W,C], mask int[H,W] -> (u8[crop_h,crop_w,C], i32[crop_h,crop_w]), both
    C-contiguous. scale_range None skips scaling. rot90 on a non-square crop only rotates
    by 0 or 180 degrees so the output shape is fixed. Mask values are only moved or padded
    with ignore_index, never invented, so a checked input stays valid.
    """
    mask = mask.astype(np.int32, copy=False)
    if scale_range is not None and tuple(scale_range) != (1.0, 1.0):
        image, mask = random_scale(image, mask, rng, scale_range)
    image, mask = random_crop(
        image,
        mask,
        rng,
        tuple(crop_size),
        ignore_index=ignore_index,
        cat_max_ratio=cat_max_ratio,
    )
    image, mask = random_flip_rotate(
        image, mask, rng, hflip=hflip, vflip=vflip, rot90=rot90, keep_shape=True
    )
    if photometric:
        image = _photometric(image, rng)
    image = gaussian_blur(image, rng, prob=blur_prob)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask, dtype=np.int32)
