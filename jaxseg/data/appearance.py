"""Appearance augmentations on the host: mmseg's photometric distortion and Gaussian blur,
image u8[H,W,C] in and out, deterministic given a np.random.Generator. Each op is a draw of
its parameters and an application given them (draw_photometric + photometric_at, blur_at),
which the device twins in jaxseg.augment are tested against.

Speed (docs/benchmarks.md, "Input pipeline"): the work stays in uint8: brightness and
contrast are lookup tables, saturation and hue HSV's arithmetic done in RGB in one float32
pass.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from jaxseg.data import images

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


class PhotometricDraw(NamedTuple):
    """One draw of mmseg's photometric distortion; None: the step is off."""

    beta: float | None  # brightness: added to every value
    contrast_first: bool  # contrast before saturation and hue, else after
    alpha: float | None  # contrast: values multiplied by it
    sat_alpha: float | None  # saturation multiplied by it
    hue_shift: int | None  # hue shifted by it, in OpenCV's 0..180 units


def draw_photometric(
    rng: np.random.Generator,
    *,
    brightness: float = 32,
    contrast=(0.5, 1.5),
    saturation=(0.5, 1.5),
    hue: int = 18,
) -> PhotometricDraw:
    """The random parameters of photometric, in mmseg's order: each step on with
    probability 1/2; brightness ~ U(-brightness, brightness), contrast ~ U(contrast),
    saturation ~ U(saturation), hue an integer in [-hue, hue]."""
    beta = rng.uniform(-brightness, brightness) if rng.integers(2) else None
    contrast_first = bool(rng.integers(2))
    alpha = None
    if contrast_first and rng.integers(2):
        alpha = rng.uniform(contrast[0], contrast[1])
    sat_alpha = rng.uniform(saturation[0], saturation[1]) if rng.integers(2) else None
    hue_shift = int(rng.integers(-hue, hue + 1)) if rng.integers(2) else None
    if not contrast_first and rng.integers(2):
        alpha = rng.uniform(contrast[0], contrast[1])
    return PhotometricDraw(beta, contrast_first, alpha, sat_alpha, hue_shift)


def photometric_at(image: np.ndarray, draw: PhotometricDraw) -> np.ndarray:
    """photometric's distortion of image u8[H,W,C] with the given draw; returns u8[H,W,C]."""
    if image.dtype != np.uint8:  # its steps are in 0..255 units (config_checks refuses it)
        raise ValueError(f"the photometric distortion takes u8 images, got {image.dtype}")
    before, after = IDENTITY_LUT, IDENTITY_LUT
    if draw.beta is not None:
        before = _convert_lut(before, beta=draw.beta)
    if draw.alpha is not None and draw.contrast_first:
        before = _convert_lut(before, alpha=draw.alpha)
    elif draw.alpha is not None:
        after = _convert_lut(after, alpha=draw.alpha)
    out = _apply_lut(image, before)
    rgb = image.ndim == 3 and image.shape[2] == 3
    moved = draw.sat_alpha is not None or draw.hue_shift is not None
    if rgb and moved and not _is_grey(out):
        alpha = 1.0 if draw.sat_alpha is None else draw.sat_alpha
        shift = 0 if draw.hue_shift is None else draw.hue_shift
        out = _saturation_hue(out, alpha, shift / 30.0)  # 30 OpenCV units a sextant
    return _apply_lut(out, after)


def photometric(image: np.ndarray, rng: np.random.Generator, **ranges) -> np.ndarray:
    """mmseg's PhotoMetricDistortion on image u8[H,W,C]; returns u8[H,W,C]. ranges:
    draw_photometric's keywords.

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
    return photometric_at(image, draw_photometric(rng, **ranges))


def _is_grey(image: np.ndarray) -> bool:
    """True when every pixel of u8[H,W,3] has R == G == B (saturation 0, hue undefined)."""
    return images.is_grey(image) or bool(
        np.array_equal(image[..., 0], image[..., 1])
        and np.array_equal(image[..., 1], image[..., 2])
    )


BLUR_SIGMA = (0.1, 2.0)  # gaussian_blur's default sigma range


def blur_at(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of u8 or u16[H,W,C] at sigma (scipy.ndimage, kernel truncated at 3
    sigma, mirrored edges), rounded to the image's dtype."""
    out = ndimage.gaussian_filter(
        image.astype(np.float32), sigma=(sigma, sigma, 0), mode="mirror", truncate=3.0
    )
    return np.clip(np.rint(out), 0, np.iinfo(image.dtype).max).astype(image.dtype)


def gaussian_blur(
    image: np.ndarray, rng: np.random.Generator, *, prob: float = 0.0, sigma=BLUR_SIGMA
) -> np.ndarray:
    """With probability prob, a Gaussian blur with sigma ~ U(sigma) (scipy.ndimage, kernel
    truncated at 3 sigma, mirrored edges); u8[H,W,C] in and out. prob 0 draws nothing."""
    if prob <= 0.0 or rng.random() >= prob:
        return image
    return blur_at(image, rng.uniform(sigma[0], sigma[1]))
