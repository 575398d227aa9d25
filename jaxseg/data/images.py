"""Reading images from untrusted files, the same way for training (folder data) and
prediction: an allow-list of formats, a pixel limit checked before decoding, EXIF
orientation applied, and every mode converted to u8 RGB on purpose.

Conversions: greyscale images become three equal channels (one in memory, as_rgb), palette
and CMYK images their RGB colours; RGBA and LA drop
alpha (no compositing); 16-bit and 32-bit integer greyscale keep their top byte of 16 bits
(value >> 8); floating-point images are refused.

Baseline JPEGs in RGB or greyscale are decoded by simplejpeg (libjpeg-turbo, like Pillow's
decoder, with the same default DCT and upsampling, so the same pixels; tested) because it
writes straight into a numpy array: 3x faster than Pillow on a 1024x2048 photo
(docs/benchmarks.md). Pillow still reads their header (format, size, EXIF) first, and
decodes everything else.
"""

from __future__ import annotations

import io

import numpy as np
import simplejpeg
from PIL import Image, ImageOps

FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")  # Pillow format names, decoded only these
EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_EXIF_ORIENTATION = 0x0112
SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that transpose width and height


class ImageError(ValueError):
    """A file that cannot be used as an image; the message names it."""


def allow_pixels(max_pixels: int) -> None:
    """Pillow refuses images above 2 * MAX_IMAGE_PIXELS inside Image.open, before our own
    check can run; raise its (process-wide) limit to ours, never lower it."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def open_image(
    path, max_pixels: int, formats=FORMATS, *, name: str | None = None, load: bool = True
) -> Image.Image:
    """Opens (a path or a binary file object) and decodes one image of an allowed format and
    at most max_pixels pixels; every failure is an ImageError naming the file (`name`, by
    default the path). A path's file is closed when this returns. load=False reads only the
    header: the caller decodes (with _load) while the file object is open."""
    name = str(path) if name is None else name
    allow_pixels(max_pixels)
    try:
        img = Image.open(path, formats=formats)
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name} refused as too large: {e}") from e
    except Image.UnidentifiedImageError as e:
        raise ImageError(
            f"cannot read {name}: not an image of an allowed format ({', '.join(formats)})"
        ) from e
    except (OSError, SyntaxError, ValueError) as e:  # what Pillow raises on corrupt files
        raise ImageError(f"cannot read {name}: {type(e).__name__}: {e}") from e
    if img.width * img.height > max_pixels:
        img.close()
        raise ImageError(
            f"{name} has {img.width}x{img.height} = {img.width * img.height} "
            f"pixels, above max_pixels={max_pixels}"
        )
    if load:
        with img:
            _load(img, name)
    return img


def _load(img: Image.Image, name: str) -> None:
    """Pillow's decode, its errors as ImageError naming the file."""
    try:
        img.load()
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name} refused as too large: {e}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot read {name}: {type(e).__name__}: {e}") from e


def orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1: as stored)."""
    return img.getexif().get(_EXIF_ORIENTATION, 1)


def shown_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as viewers show the image, after its EXIF orientation."""
    return img.size[::-1] if orientation(img) in SWAPS_AXES else img.size


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
    return read_rgb_upright(path, max_pixels)[0]


def read_rgb_upright(path: str, max_pixels: int) -> tuple[np.ndarray, int]:
    """(u8[H,W,3] turned upright, the EXIF orientation the file had): read_rgb, plus what a
    caller needs to compare the stored size with a mask's."""
    allow_pixels(max_pixels)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImageError(f"cannot read {path}: {type(e).__name__}: {e}") from e
    img = open_image(io.BytesIO(data), max_pixels, name=path, load=False)
    # A JPEG's EXIF comes with its header; a PNG's may follow the pixels, so other formats
    # are decoded before their orientation is read.
    if img.format == "JPEG" and img.mode in ("RGB", "L") and orientation(img) == 1:
        try:
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB" if img.mode == "RGB" else "GRAY")
        except ValueError as e:  # simplejpeg's error for corrupt data
            raise ImageError(f"cannot read {path}: {e}") from e
        return (pixels if img.mode == "RGB" else as_rgb(pixels[..., 0])), 1
    _load(img, path)
    return to_rgb8(upright(img), path), orientation(img)
