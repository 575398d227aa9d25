"""Joint image+mask augmentations on the host, deterministic given a np.random.Generator.

Every function takes image u8[H,W,C] and/or mask int[H,W] and returns new arrays; geometric
ops always move image and mask together, masks only ever use nearest neighbour, and padding
fills masks with ignore_index. train_transform chains them in mmseg's order:
scale -> crop -> flips/rot90 -> elastic -> photometric -> blur, with the options of
jaxseg.data.augment_spec.AugmentSpec (the device chain, jaxseg.augment, takes the same).
Resizing, cropping and flips live here; the elastic deformation in jaxseg.data.deform, the
photometric distortion and blur in jaxseg.data.appearance (importable from here too).

Speed (docs/benchmarks.md, "Input pipeline"): the work stays in uint8. The random scale
resizes only the pixels the crop keeps (Pillow's resize with a source box), masks are
resized by index arithmetic in their own dtype, and the photometric changes are lookup
tables plus HSV's saturation and hue arithmetic done in RGB in one float32 pass.

Resampling uses pixel centres (align_corners=False) for both the bilinear image and the
nearest mask, so the two stay aligned to within half a source pixel.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from jaxseg.data import images
from jaxseg.data.appearance import gaussian_blur as gaussian_blur
from jaxseg.data.appearance import photometric as photometric
from jaxseg.data.augment_spec import AugmentSpec
from jaxseg.data.deform import cubic_matrix as cubic_matrix
from jaxseg.data.deform import elastic as elastic
from jaxseg.data.deform import elastic_field as elastic_field
from jaxseg.data.deform import warp as warp

# ----------------------------------------------------------------------------- resizing


def _resize_image(image: np.ndarray, size: tuple[int, int], box=None) -> np.ndarray:
    """Bilinear resize of u8 or u16[H,W,C] (or the source box (x0, y0, x1, y1) of it, in
    pixels) to [h,w,C] of the same dtype with Pillow, antialiased when shrinking."""
    height, width = size
    if box is None and image.shape[:2] == (height, width):
        return image.copy()
    if box is not None:  # hand Pillow only the pixels the box's filter windows read
        image, box = _around(image, box, (height, width))
    if images.is_grey(image):  # one channel resized, three shown
        return images.as_rgb(_resize_image(image[..., :1], size, box)[..., 0])
    channels = image.shape[2]
    if channels in (1, 3) and image.dtype == np.uint8:
        mode_image = Image.fromarray(
            np.ascontiguousarray(image if channels == 3 else image[..., 0])
        )
        out = np.asarray(mode_image.resize((width, height), Image.BILINEAR, box=box))
        return out if channels == 3 else out[..., None]
    # Pillow has no generic C-channel u8 mode, RGBA resizes premultiplied, and 16-bit data
    # has only greyscale modes (a u16 plane is mode I;16): go per channel.
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
    return crop_at(image, mask, (height, width), (top, left), (crop_h, crop_w), ignore_index)


def crop_at(
    image: np.ndarray,
    mask: np.ndarray,
    scaled: tuple[int, int],
    origin: tuple[int, int],
    size: tuple[int, int],
    ignore_index: int = 255,
):
    """image u8[H,W,C] and mask int[H,W] rescaled to scaled = (h', w') and cropped to size
    (h, w) at origin = (top, left) of the rescaled example padded at the bottom/right to at
    least size: scaled_crop given its draws. Only the kept pixels are resized (Pillow with
    a source box). Returns (u8[h,w,C], int[h,w]), mask dtype kept."""
    (src_h, src_w), (height, width), (top, left) = mask.shape, scaled, origin
    y0, y1 = top, min(top + size[0], height)
    x0, x1 = left, min(left + size[1], width)
    rows, cols = nearest_index(src_h, height), nearest_index(src_w, width)
    out_mask = mask.take(rows[y0:y1], axis=0).take(cols[x0:x1], axis=1)
    if (height, width) == (src_h, src_w):
        out_image = image[y0:y1, x0:x1]
    else:
        sy, sx = src_h / height, src_w / width
        box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        out_image = _resize_image(image, (y1 - y0, x1 - x0), box=box)
    return _pad(out_image, out_mask, size, ignore_index)


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


# ----------------------------------------------------------------------------- the chain


def train_transform(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    spec: AugmentSpec | None = None,
    **options,
):
    """The training chain: scale -> crop -> flips/rot90 -> elastic -> photometric -> blur
    (mmseg's order, with the U-Net paper's elastic deformation where geometry ends), as
    `spec` says, or AugmentSpec(**options) (options replace spec's fields when both come).

    image u8[H,W,C], mask int[H,W] -> (u8[crop_h,crop_w,C], i32[crop_h,crop_w]), both
    C-contiguous. rot90 on a non-square crop only rotates by 0 or 180 degrees so the output
    shape is fixed. Mask values are only moved or padded with ignore_index, never
    invented, so a checked input stays valid. The mask keeps its own (small) dtype until
    the end. spec.backend and spec.canvas_size (the device's) are not read.
    """
    spec = AugmentSpec(**options) if spec is None else dataclasses.replace(spec, **options)
    image, mask = scaled_crop(
        image,
        mask,
        rng,
        spec.crop_size,
        scale_range=spec.scale_range,
        ignore_index=spec.ignore_index,
        cat_max_ratio=spec.cat_max_ratio,
    )
    image, mask = random_flip_rotate(
        image, mask, rng, hflip=spec.hflip, vflip=spec.vflip, rot90=spec.rot90, keep_shape=True
    )
    image, mask = elastic(image, mask, rng, sigma=spec.elastic_sigma, grid=spec.elastic_grid)
    if spec.photometric:
        image = photometric(image, rng)
    image = gaussian_blur(image, rng, prob=spec.blur_prob)
    if images.is_grey(image):  # stacking is 5x faster than copying the stride-0 view
        image = np.stack([image[..., 0]] * image.shape[-1], axis=-1)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask, dtype=np.int32)
