"""Reading images from untrusted files, the same way for training (folder data) and
prediction: an allow-list of formats, a pixel limit checked before decoding, EXIF
orientation applied, and every mode converted to u8 RGB on purpose.

Conversions: greyscale images become three equal channels (one in memory, as_rgb), palette
and CMYK images their RGB colours; RGBA and LA drop
alpha (no compositing); 16-bit and 32-bit integer greyscale keep their top byte of 16 bits
(value >> 8); floating-point images are refused.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")  # Pillow format names, decoded only these
EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that transpose width and height


class ImageError(ValueError):
    """A file that cannot be used as an image; the message names it."""


def allow_pixels(max_pixels: int) -> None:
    """Pillow refuses images above 2 * MAX_IMAGE_PIXELS inside Image.open, before our own
    check can run; raise its (process-wide) limit to ours, never lower it."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def open_image(path: str, max_pixels: int, formats=FORMATS) -> Image.Image:
    """Opens and decodes one file of an allowed format and at most max_pixels pixels; every
    failure is an ImageError naming the file. The file is closed when this returns."""
    allow_pixels(max_pixels)
    try:
        with Image.open(path, formats=formats) as img:
            if img.width * img.height > max_pixels:
                raise ImageError(
                    f"{path} has {img.width}x{img.height} = {img.width * img.height} "
                    f"pixels, above max_pixels={max_pixels}"
                )
            img.load()
        return img
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path} refused as too large: {e}") from e
    except Image.UnidentifiedImageError as e:
        raise ImageError(
            f"cannot read {path}: not an image of an allowed format ({', '.join(formats)})"
        ) from e
    except (OSError, SyntaxError, ValueError) as e:  # what Pillow raises on corrupt files
        raise ImageError(f"cannot read {path}: {type(e).__name__}: {e}") from e


def orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1: as stored)."""
    return img.getexif().get(_EXIF_ORIENTATION, 1)


def shown_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as viewers show the image, after its EXIF orientation."""
    return img.size[::-1] if orientation(img) in _SWAPS_AXES else img.size


def upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (annotators saw it that way)."""
    return ImageOps.exif_transpose(img) if orientation(img) != 1 else img


def to_rgb8(img: Image.Image, path: str = "image") -> np.ndarray:
    """u8[H,W,3] of any mode (see the module docstring for the conversions)."""
    if img.mode in SIXTEEN_BIT or img.mode == "I":
        values = np.asarray(img).astype(np.int64)
        if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
            raise ImageError(f"{path}: mode {img.mode} values outside 16 bits")
        return as_rgb((values >> 8).astype(np.uint8))
    if img.mode == "F":
        raise ImageError(f"{path}: floating-point images (mode F) are not supported")
    if img.mode == "L":
        return as_rgb(np.asarray(img, dtype=np.uint8))
    try:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except ValueError as e:
        raise ImageError(f"{path}: cannot convert mode {img.mode} to RGB: {e}") from e


def as_rgb(grey: np.ndarray) -> np.ndarray:
    """u8[H,W] as a read-only u8[H,W,3] view with the three channels the same memory (the
    last stride 0): greyscale data pays for one channel until something writes three, and
    jaxseg.data.transforms resizes and tables it as one (is_grey)."""
    return np.broadcast_to(grey[..., None], (*grey.shape, 3))


def is_grey(image: np.ndarray) -> bool:
    """True for as_rgb's views (checked by their strides, without reading pixels)."""
    return image.ndim == 3 and image.shape[-1] > 1 and image.strides[-1] == 0


def read_rgb(path: str, max_pixels: int) -> np.ndarray:
    """u8[H,W,3] of an untrusted image file, upright; ImageError naming the file if refused."""
    img = open_image(path, max_pixels)
    return to_rgb8(upright(img), path)
