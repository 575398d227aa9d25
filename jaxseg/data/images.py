"""Reading images from untrusted files, the same way for training (folder data) and
prediction: an allow-list of formats, a pixel limit checked before decoding, EXIF
orientation applied, and every mode converted to u8 RGB on purpose (read_rgb), or, for data
that is not 8-bit RGB, each file's own bands at their own depth (read_bands: greyscale,
RGB+NIR, multi-band TIFF; u8 or u16).

Conversions: greyscale images become three equal channels (one in memory, as_rgb), palette
and CMYK images their RGB colours; RGBA and LA drop
alpha (no compositing); 16-bit and 32-bit integer greyscale keep their top byte of 16 bits
(value >> 8); floating-point images are refused.

Baseline JPEGs in RGB or greyscale are decoded by simplejpeg (libjpeg-turbo, like Pillow's
decoder, with the same default DCT and upsampling, so the same pixels; tested) because it
writes straight into a numpy array: 3x faster than Pillow on a 1024x2048 photo
(docs/benchmarks.md). Pillow still reads their header (format, size, EXIF) first, and
decodes everything else.

read_bands reads TIFFs with tifffile (Pillow has no mode for more than 4 bands, nor for
16-bit colour), checking the pixel limit and the band count from the header before it
decodes anything, and turning the image as its TIFF Orientation tag says (the tag EXIF
carries, so read_rgb turns the same file the same way); other formats through Pillow.
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
    return decode_rgb_upright(data, path, max_pixels)


def decode_rgb_upright(data: bytes, name: str, max_pixels: int) -> tuple[np.ndarray, int]:
    """read_rgb_upright of a file's bytes (`name` for errors): jaxseg.data.packed decodes
    the bytes it stored with it, so a packed copy gives the folder's pixels."""
    img = open_image(io.BytesIO(data), max_pixels, name=name, load=False)
    # A JPEG's EXIF comes with its header; a PNG's may follow the pixels, so other formats
    # are decoded before their orientation is read.
    if img.format == "JPEG" and img.mode in ("RGB", "L") and orientation(img) == 1:
        try:
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB" if img.mode == "RGB" else "GRAY")
        except ValueError as e:  # simplejpeg's error for corrupt data
            raise ImageError(f"cannot read {name}: {e}") from e
        return (pixels if img.mode == "RGB" else as_rgb(pixels[..., 0])), 1
    _load(img, name)
    return to_rgb8(upright(img), name), orientation(img)


# ------------------------------------------------------------- bands: not 8-bit RGB

BAND_DTYPES = (np.uint8, np.uint16)
_TIFF_EXTENSIONS = (".tif", ".tiff")
# Pillow modes read as they are stored (bands last), and those converted to RGB first.
_PILLOW_BANDS = ("L", "LA", "RGB", "RGBA", "CMYK", *SIXTEEN_BIT, "I")
_PILLOW_TO_RGB = ("1", "P", "PA", "YCbCr", "LAB", "HSV")


def read_bands(path: str, max_pixels: int, channels: int) -> np.ndarray:
    """u8 or u16[H,W,channels] of an untrusted image file, upright: its own bands at its own
    depth; ImageError naming the file if refused (another band count included)."""
    return read_bands_upright(path, max_pixels, channels)[0]


def read_bands_upright(path: str, max_pixels: int, channels: int) -> tuple[np.ndarray, int]:
    """(u8 or u16[H,W,channels] turned upright, the orientation the file had): read_bands,
    plus what a caller needs to compare the stored size with a mask's."""
    allow_pixels(max_pixels)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImageError(f"cannot read {path}: {type(e).__name__}: {e}") from e
    if str(path).lower().endswith(_TIFF_EXTENSIONS):
        bands, turn = _tiff_bands(data, path, max_pixels, channels)
    else:
        img = open_image(io.BytesIO(data), max_pixels, name=path, load=False)
        _load(img, path)
        bands, turn = _pillow_bands(upright(img), path), orientation(img)
    if bands.shape[-1] != channels:
        raise ImageError(f"{path} has {bands.shape[-1]} bands, data.channels={channels}")
    return bands, turn


def _pillow_bands(img: Image.Image, path: str) -> np.ndarray:
    """u8 or u16[H,W,C] of a decoded Pillow image: modes as stored (palette and other colour
    spaces as RGB, 1-bit as 0/255), 32-bit integer greyscale if its values fit 16 bits."""
    if img.mode in _PILLOW_TO_RGB:
        img = img.convert("L" if img.mode == "1" else "RGB")
    if img.mode == "F":
        raise ImageError(f"{path}: floating-point images (mode F) are not supported")
    if img.mode not in _PILLOW_BANDS:
        raise ImageError(f"{path}: mode {img.mode} is not supported")
    values = np.asarray(img)
    if img.mode == "I":
        if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
            raise ImageError(f"{path}: mode I values outside 16 bits")
        values = values.astype(np.uint16)
    if values.dtype.byteorder == ">":  # I;16B
        values = values.astype(np.uint16)
    return values if values.ndim == 3 else values[..., None]


def _tiff_bands(data: bytes, path: str, max_pixels: int, channels: int):
    """(u8 or u16[H,W,C] upright, the Orientation tag) of a TIFF's first image, read with
    tifffile: its bands are the samples of a pixel (YXS, SYX) or a stack of pages (one
    band each). Size, band count and sample type are checked before decoding."""
    import tifffile  # only runs that read bands need it

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            series, page = tif.series[0], tif.pages[0]
            axes, shape = series.axes, series.shape
            others = [a for a in axes if a not in "YX"]
            if "Y" not in axes or "X" not in axes or len(others) > 1:
                raise ImageError(f"{path}: TIFF axes {axes} {shape}; expected YX and one band axis")
            height, width = shape[axes.index("Y")], shape[axes.index("X")]
            if height * width > max_pixels:
                raise ImageError(
                    f"{path} has {width}x{height} = {width * height} pixels, "
                    f"above max_pixels={max_pixels}"
                )
            count = shape[axes.index(others[0])] if others else 1
            if count != channels:
                raise ImageError(f"{path} has {count} bands, data.channels={channels}")
            if series.dtype not in BAND_DTYPES:
                raise ImageError(
                    f"{path}: TIFF samples of type {series.dtype} are not supported "
                    "(8- or 16-bit unsigned integers)"
                )
            tag = page.tags.get(_TIFF_ORIENTATION)
            turn = int(tag.value) if tag is not None else 1
            bands = series.asarray()
    except ImageError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as e:
        why = f"{type(e).__name__}: {e}"
        raise ImageError(f"cannot read {path}: not a readable TIFF ({why})") from e
    order = [axes.index("Y"), axes.index("X")] + ([axes.index(others[0])] if others else [])
    bands = bands.transpose(order) if others else bands[..., None]
    return np.ascontiguousarray(turned(bands, turn)), turn


_TIFF_ORIENTATION = 274  # the TIFF tag that EXIF's orientation (0x0112) is


def turned(image: np.ndarray, orientation: int) -> np.ndarray:
    """image [H,W,C] as Pillow's ImageOps.exif_transpose turns an image with this EXIF/TIFF
    orientation (1: as stored; 5..8 swap H and W)."""
    steps = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    return steps[orientation](image) if orientation in steps else image
