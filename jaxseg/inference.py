"""One inference path, jit-able, from u8 images to per-pixel class scores at input size.

Training's evaluation, jaxseg.evaluate, jaxseg.predict, the Segmenter API and the exports
all call `scores`. Its settings (`Settings`, from the config's `eval` section) are static:

- mode "whole": the model sees each image at once (models pad to their own size divisor
  and crop back);
- mode "slide": windows of crop_size on a grid with step `stride` whose last row and column
  end at the image border (MMSeg's slide_inference), images smaller than a window padded;
  overlapping logits are averaged. Windows of the whole batch go through the model
  `window_batch` at a time, in one compiled loop, split over the mesh's data axis;
- test-time augmentation: every scale in `scales` (and its horizontal flip with `flip`) is
  predicted, resized back to the input size, and its softmax added to a running sum
  (MMSeg's TTA);
- `crf` (jaxseg.crf.CRFParams): the final probabilities refined by a dense CRF's mean
  field with the image (DeepLab v1/v2's post-processing), padding excluded.

A batch shares one canvas: `sizes` gives each image's own (height, width); pixels beyond
it are padding, set to 0 after normalisation (the mean colour) and never read into an
image's windows beyond what a smaller-than-window image needs. Whole mode and the scaled
views resize the canvas as a whole, so for an image smaller than its canvas the border
row and column blend with padding; predict groups images by size so that this does not
arise there.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.crf import CRFParams, mean_field
from jaxseg.models.layers import resize

MODES = ("whole", "slide")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Static inference settings (hashable: they select a compiled program).

    crop_size, stride: slide windows (height, width). scales: test-time resize factors.
    window_batch: windows per forward pass in slide mode.
    """

    mode: str = "whole"
    crop_size: tuple[int, int] = (512, 512)
    stride: tuple[int, int] = (341, 341)
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    window_batch: int = 8
    # Dense CRF post-processing (jaxseg.crf) of the final probabilities; None: off.
    crf: CRFParams | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"eval.mode={self.mode!r}; valid: {', '.join(MODES)}")
        if min(self.crop_size) < 1 or min(self.stride) < 1 or self.window_batch < 1:
            raise ValueError(
                f"eval.crop_size {self.crop_size}, eval.stride {self.stride} and "
                f"eval.window_batch {self.window_batch} must be positive"
            )
        if any(s > c for s, c in zip(self.stride, self.crop_size, strict=True)):
            raise ValueError(
                f"eval.stride {self.stride} is larger than eval.crop_size {self.crop_size}: "
                "pixels between windows would get no prediction"
            )
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"eval.scales must be positive numbers, got {self.scales}")

    @property
    def views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    def describe(self) -> dict:
        """JSON-ready record of the settings (slide fields only in slide mode)."""
        out = {"mode": self.mode, "scales": list(self.scales), "flip": self.flip}
        if self.crf is not None:
            out["crf"] = dataclasses.asdict(self.crf)
        if self.mode == "slide":
            out |= {
                "crop_size": list(self.crop_size),
                "stride": list(self.stride),
                "window_batch": self.window_batch,
            }
        return out


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """uint8 or float [..., C] in [0, 255] -> f32 (x / 255 - mean) / std; uint16 in
    [0, 65535] -> (x / 65535 - mean) / std."""
    scale = 65535.0 if images.dtype == jnp.uint16 else 255.0
    x = images.astype(jnp.float32) / scale
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _inside(sizes: jax.Array, height: int, width: int) -> jax.Array:
    """bool[B,height,width]: the pixels of each image's own (h, w) region, sizes i32[B,2]."""
    rows = jnp.arange(height)[None, :, None] < sizes[:, 0, None, None]
    cols = jnp.arange(width)[None, None, :] < sizes[:, 1, None, None]
    return rows & cols


def _flip(x: jax.Array, sizes: jax.Array) -> jax.Array:
    """Mirrors each image's own columns [0, w) of x [B,H,W,...]; padding stays in place."""
    columns = jnp.arange(x.shape[2])[None, :]
    widths = sizes[:, 1:2]
    index = jnp.where(columns < widths, widths - 1 - columns, columns)  # [B, W]
    index = index.reshape(index.shape[0], 1, index.shape[1], *([1] * (x.ndim - 3)))
    return jnp.take_along_axis(x, jnp.broadcast_to(index, x.shape), axis=2)


def _forward(model: nn.Module, variables, x: jax.Array) -> jax.Array:
    logits, _ = model.apply(variables, x, train=False)
    return logits.astype(jnp.float32)


def _grid(length: int, crop: int, stride: int) -> int:
    """Windows along one side of `length` pixels (MMSeg's h_grids)."""
    return max(length - crop + stride - 1, 0) // stride + 1


def _origins(index: jax.Array, length: jax.Array, crop: int, stride: int) -> jax.Array:
    """Start of window `index` along a side of `length`: index * stride, pulled back so the
    window ends at the border (never before 0: a side shorter than the window is padded)."""
    return jnp.clip(index * stride, 0, jnp.maximum(length - crop, 0))


def _coverage(lengths: jax.Array, extent: int, crop: int, stride: int) -> jax.Array:
    """f32[B,extent]: how many of each image's windows cover each position along one side."""
    grid = _grid(extent, crop, stride)
    index = jnp.arange(grid)
    counts = jnp.maximum(lengths - crop + stride - 1, 0) // stride + 1  # [B]
    starts = _origins(index[None, :], lengths[:, None], crop, stride)  # [B, grid]
    valid = index[None, :] < counts[:, None]
    pos = jnp.arange(extent)[None, None, :]
    covered = (pos >= starts[..., None]) & (pos < starts[..., None] + crop) & valid[..., None]
    return covered.sum(axis=1).astype(jnp.float32)


def _slide(
    model, variables, view, sizes, settings: Settings, mean, std, window_sharding
) -> jax.Array:
    """Averaged window logits f32[B,H,W,K] of one view [B,H,W,3] (u8, or f32 normalised
    with padding at 0) whose images have sizes i32[B,2]."""
    batch, height, width = view.shape[:3]
    (ch, cw), (sh, sw) = settings.crop_size, settings.stride
    # Pad the canvas so that every window lies inside it.
    padded_h, padded_w = max(height, ch), max(width, cw)
    pad = ((0, 0), (0, padded_h - height), (0, padded_w - width), (0, 0))
    view = jnp.pad(view, pad)
    grid_h, grid_w = _grid(height, ch, sh), _grid(width, cw, sw)
    total = batch * grid_h * grid_w
    wb = settings.window_batch
    chunks = (total + wb - 1) // wb  # integer arithmetic: the batch may be symbolic (export)
    counts_h = jnp.maximum(sizes[:, 0] - ch + sh - 1, 0) // sh + 1
    counts_w = jnp.maximum(sizes[:, 1] - cw + sw - 1, 0) // sw + 1
    normalised = jnp.issubdtype(view.dtype, jnp.floating)

    def window(w):
        """Window w of the enumeration (image, row, column): its pixels, origin, validity."""
        b, rest = w // (grid_h * grid_w), w % (grid_h * grid_w)
        i, j = rest // grid_w, rest % grid_w
        b = jnp.minimum(b, batch - 1)  # the enumeration's padding reads image B-1 (masked)
        y = _origins(i, sizes[b, 0], ch, sh)
        x = _origins(j, sizes[b, 1], cw, sw)
        valid = (w < total) & (i < counts_h[b]) & (j < counts_w[b])
        pixels = jax.lax.dynamic_slice(view, (b, y, x, 0), (1, ch, cw, view.shape[3]))[0]
        if not normalised:  # u8 canvas: normalise here, one window at a time
            pixels = normalize(pixels, mean, std)
            rows = (y + jnp.arange(ch))[:, None] < sizes[b, 0]
            cols = (x + jnp.arange(cw))[None, :] < sizes[b, 1]
            pixels = jnp.where((rows & cols)[..., None], pixels, 0.0)
        return pixels, b, y, x, valid

    num_classes = jax.eval_shape(
        lambda v: _forward(model, variables, v), jax.ShapeDtypeStruct((1, ch, cw, 3), jnp.float32)
    ).shape[-1]

    def chunk(c, acc):
        pixels, b, y, x, valid = jax.vmap(window)(c * wb + jnp.arange(wb))
        if window_sharding is not None:  # the windows, not the images, split over devices
            pixels = jax.lax.with_sharding_constraint(pixels, window_sharding)
        logits = _forward(model, variables, pixels)
        logits = jnp.where(valid[:, None, None, None], logits, 0.0)

        def add(k, acc):
            start = (b[k], y[k], x[k], 0)
            old = jax.lax.dynamic_slice(acc, start, (1, ch, cw, num_classes))
            return jax.lax.dynamic_update_slice(acc, old + logits[k][None], start)

        return jax.lax.fori_loop(0, wb, add, acc)

    acc = jnp.zeros((batch, padded_h, padded_w, num_classes), jnp.float32)
    acc = jax.lax.fori_loop(0, chunks, chunk, acc)
    # The grid is rows x columns, so a pixel's window count is a row count times a column
    # count: two small reciprocals, no [B,H,W] count array, and the division fuses into
    # whatever consumes the result (argmax, softmax).
    rows = 1.0 / jnp.maximum(_coverage(sizes[:, 0], padded_h, ch, sh), 1.0)
    cols = 1.0 / jnp.maximum(_coverage(sizes[:, 1], padded_w, cw, sw), 1.0)
    out = acc[:, :height, :width] * rows[:, :height, None, None]
    return out * cols[:, None, :width, None]


def scores(
    variables,
    images: jax.Array,
    sizes: jax.Array | None = None,
    *,
    model: nn.Module,
    mean,
    std,
    settings: Settings | None = None,
    window_sharding=None,
) -> jax.Array:
    """Per-pixel class scores f32[B,H,W,K] for images u8[B,H,W,3]; argmax gives the labels.

    With one view (scales (1.0,), no flip) these are the model's logits (slide: averaged
    over windows); with several, log of the softmax averaged over the views, so softmax of
    the result is the averaged probability either way.

    variables: {"params", "batch_stats"}. sizes: i32[B,2], each image's own height and
    width inside the canvas (None: all of it). settings: None is Settings(), one whole
    view. window_sharding: a sharding for the [window_batch, h, w, 3] windows of slide mode
    (None: as XLA places them); whole mode does not use it.
    """
    settings = Settings() if settings is None else settings
    batch, height, width = images.shape[:3]
    full = sizes is None  # every image fills the canvas: no padding to mask
    if full:
        sizes = jnp.broadcast_to(jnp.asarray([height, width], jnp.int32), (batch, 2))
    sizes = sizes.astype(jnp.int32)

    def normalised_canvas():
        x = normalize(images, mean, std)
        if full:
            return x
        return jnp.where(_inside(sizes, height, width)[..., None], x, 0.0)

    def predict(view, view_sizes):
        if settings.mode == "whole":
            return _forward(model, variables, view)
        return _slide(model, variables, view, view_sizes, settings, mean, std, window_sharding)

    total = None
    for scale in settings.scales:
        if scale == 1.0:
            view_sizes = sizes
            # Slide normalises window by window: no f32 copy of a large canvas.
            view = images if settings.mode == "slide" else normalised_canvas()
        else:
            view_h, view_w = max(1, round(height * scale)), max(1, round(width * scale))
            view = resize(normalised_canvas(), (view_h, view_w))
            factor = jnp.asarray([view_h / height, view_w / width])
            view_sizes = jnp.maximum(jnp.round(sizes * factor), 1).astype(jnp.int32)
            if not full:
                view = jnp.where(_inside(view_sizes, view_h, view_w)[..., None], view, 0)
        for flipped in (False, True) if settings.flip else (False,):
            if flipped and full:
                logits = predict(view[:, :, ::-1], view_sizes)[:, :, ::-1]
            elif flipped:
                logits = _flip(predict(_flip(view, view_sizes), view_sizes), view_sizes)
            else:
                logits = predict(view, view_sizes)
            logits = resize(logits, (height, width))
            if settings.views == 1 and settings.crf is None:
                return logits
            probs = jax.nn.softmax(logits, axis=-1)
            total = probs if total is None else total + probs  # a running sum, not a stack
    mean_probs = total / settings.views
    if settings.crf is not None:
        # The CRF refines the final probabilities with the image; padding takes no part.
        valid = None if full else _inside(sizes, height, width)
        mean_probs = mean_field(mean_probs, images, settings.crf, valid)
    return jnp.log(jnp.maximum(mean_probs, jnp.finfo(jnp.float32).tiny))


def labels(scores: jax.Array) -> jax.Array:
    """i32[B,H,W] class indices from scores f32[B,H,W,K]."""
    return jnp.argmax(scores, axis=-1).astype(jnp.int32)
