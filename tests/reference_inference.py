"""Plain references for jaxseg.inference, written here from MMSeg's loops and formulas and
sharing none of jaxseg's helpers: normalisation, bilinear resizing (F.interpolate,
align_corners=False, by its formula), slide_inference one window at a time, and test-time
augmentation one view at a time, on numpy arrays. Tests compare jaxseg against them."""

import jax
import jax.numpy as jnp
import numpy as np


def normalised(image, mean, std) -> np.ndarray:
    """u8[h,w,3] -> f32 (x / 255 - mean) / std."""
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return (image.astype(np.float32) / 255 - mean) / std


def forward(model, variables):
    """f32[h,w,3] normalised -> f32[h,w,K] logits of model in eval mode, one image (jitted:
    one compile per image shape)."""
    apply = jax.jit(lambda v, x: model.apply(v, x[None], train=False)[0][0])

    def logits(x):
        return np.asarray(apply(variables, jnp.asarray(x, jnp.float32)))

    return logits


def bilinear(x: np.ndarray, size) -> np.ndarray:
    """F.interpolate(x, size, mode="bilinear", align_corners=False) of f32[h,w,C], from its
    formula: source = (i + 0.5) * in / out - 0.5, clamped at 0, neighbours clamped at the
    border; no antialiasing."""

    def taps(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    (y0, y1, wy), (x0, x1, wx) = taps(x.shape[0], size[0]), taps(x.shape[1], size[1])
    rows = x[y0] * (1 - wy)[:, None, None] + x[y1] * wy[:, None, None]
    return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def slide(logits, x: np.ndarray, crop, stride) -> np.ndarray:
    """MMSeg's slide_inference of one normalised f32[h,w,3] image (smaller than the window:
    zero-padded at the bottom/right), logits averaged over the windows: f32[h,w,K]."""
    h, w = x.shape[:2]
    (ch, cw), (sh, sw) = crop, stride
    padded = np.zeros((max(h, ch), max(w, cw), 3), np.float32)
    padded[:h, :w] = x
    h_img, w_img = padded.shape[:2]
    h_grids = max(h_img - ch + sh - 1, 0) // sh + 1
    w_grids = max(w_img - cw + sw - 1, 0) // sw + 1
    preds, count = None, np.zeros((h_img, w_img), np.float32)
    for i in range(h_grids):
        for j in range(w_grids):
            y1, x1 = i * sh, j * sw
            y2, x2 = min(y1 + ch, h_img), min(x1 + cw, w_img)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            out = logits(padded[y1:y2, x1:x2])
            if preds is None:
                preds = np.zeros((h_img, w_img, out.shape[-1]), np.float32)
            preds[y1:y2, x1:x2] += out
            count[y1:y2, x1:x2] += 1
    assert count.min() >= 1
    return (preds / count[..., None])[:h, :w]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def tta(predict, x: np.ndarray, scales=(1.0,), flip=False) -> np.ndarray:
    """MMSeg's TTA of one normalised f32[h,w,3] image: the softmax of every view (each scale,
    and its horizontal flip), resized back to (h, w), averaged: f32[h,w,K] probabilities.
    predict: f32[h',w',3] -> f32[h',w',K] (the model, or a slide over it)."""
    h, w = x.shape[:2]
    total, views = 0.0, 0
    for s in scales:
        view = bilinear(x, (round(h * s), round(w * s))) if s != 1.0 else x
        for flipped in (False, True) if flip else (False,):
            out = predict(view[:, ::-1])[:, ::-1] if flipped else predict(view)
            total = total + softmax(bilinear(out, (h, w)) if s != 1.0 else out)
            views += 1
    return total / views
