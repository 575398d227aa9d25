"""Training augmentation inside the jitted train step (augment.backend="device").

The host only decodes each example and pads it to a fixed canvas (jaxseg.data.pipeline,
DevicePrep); here, per example and in jnp, the same chain as the host path
(jaxseg.data.transforms.train_transform) runs on the accelerator: random rescale and crop,
flips and rot90, elastic deformation, mmseg's photometric distortion and Gaussian blur.
The distributions and the arithmetic are the host path's:

- rescale + crop: Pillow's antialiased bilinear filter as two small matrices per example
  (out = Wy @ image @ Wx^T), restricted to the rows and columns the crop keeps, and the mask
  by the host's nearest-neighbour index arithmetic; padding 0 / ignore_index;
- photometric: mmseg's steps with the truncation after each, saturation and hue by the
  host's RGB formula, rounded once;
- elastic and blur: the host's field (the same cubic matrices) and kernel (3 sigma).

The random numbers come from jax.random: each example's key is the step's key folded with
the example's index in the global batch, so the augmented batch is the same on 1 or 8
devices and a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.data import deform
from jaxseg.data.appearance import BLUR_SIGMA
from jaxseg.data.augment_spec import AugmentSpec


def _resample_matrix(n, m, start, out_size: int, canvas: int):
    """f32[out_size, canvas]: rows start..start+out_size of Pillow's bilinear resize of n
    samples (the example's true size, n <= canvas) to m, antialiased when m < n; rows at
    or beyond m (the crop's padding) are zero."""
    scale = n / m
    filter_scale = jnp.maximum(scale, 1.0)
    centre = (start + jnp.arange(out_size) + 0.5) * scale
    j = jnp.arange(canvas) + 0.5
    w = jnp.maximum(0.0, 1.0 - jnp.abs(j[None, :] - centre[:, None]) / filter_scale)
    w = jnp.where(jnp.arange(canvas)[None, :] < n, w, 0.0)
    w = w / jnp.maximum(w.sum(1, keepdims=True), 1e-12)
    return jnp.where((start + jnp.arange(out_size) < m)[:, None], w, 0.0)


def _nearest_rows(n, m, start, out_size: int):
    """i32[out_size] source rows of the nearest-neighbour resize n -> m at rows start..,
    and bool[out_size]: inside the rescaled example (else padding)."""
    i = start + jnp.arange(out_size)
    return jnp.minimum((2 * i + 1) * n // (2 * m), n - 1), i < m


def crop_at(image, mask, size, scaled, origin, opts: AugmentSpec):
    """image u8 or u16[Hc,Wc,C], mask int[Hc,Wc] (the example in the top-left size = (H, W)
    of the canvas) rescaled to scaled = (h', w') and cropped to opts.crop_size at origin = (top,
    left) of the rescaled example padded to at least the crop: f32[h,w,C] (integer values,
    0 in the padding), i32[h,w] (ignore_index in the padding)."""
    crop_h, crop_w = opts.crop_size
    (height, width), (m_h, m_w), (top, left) = size, scaled, origin
    wy = _resample_matrix(height, m_h, top, crop_h, image.shape[0])
    wx = _resample_matrix(width, m_w, left, crop_w, image.shape[1])
    hp = jax.lax.Precision.HIGHEST  # u8 values and weights in f32: no bf16 passes
    out = jnp.einsum("yh,hwc->ywc", wy, image.astype(jnp.float32), precision=hp)
    out = jnp.einsum("xw,ywc->yxc", wx, out, precision=hp)
    rows, in_y = _nearest_rows(height, m_h, top, crop_h)
    cols, in_x = _nearest_rows(width, m_w, left, crop_w)
    out_mask = mask[rows][:, cols].astype(jnp.int32)
    out_mask = jnp.where(in_y[:, None] & in_x[None, :], out_mask, opts.ignore_index)
    return jnp.floor(jnp.clip(out, 0, top_value(image)) + 0.5), out_mask


def top_value(image) -> float:
    """The largest value of an integer image's dtype (255 for u8, 65535 for u16); 255 for
    float images, which hold u8 values."""
    if jnp.issubdtype(image.dtype, jnp.integer):
        return float(jnp.iinfo(image.dtype).max)
    return 255.0


def rescale_crop(key, image, mask, size, opts: AugmentSpec):
    """crop_at with the host's draws: s ~ U(scale_range), sides round(H s), round(W s) (at
    least 1), the crop's origin uniform over the positions inside the padded example."""
    crop_h, crop_w = opts.crop_size
    k_scale, k_top, k_left = jax.random.split(key, 3)
    height, width = size[0], size[1]
    if opts.rescales:
        s = jax.random.uniform(k_scale, (), jnp.float32, *opts.scale_range)
        m_h = jnp.maximum(1, jnp.round(height * s).astype(jnp.int32))
        m_w = jnp.maximum(1, jnp.round(width * s).astype(jnp.int32))
    else:
        m_h, m_w = height, width
    top = jax.random.randint(k_top, (), 0, jnp.maximum(m_h, crop_h) - crop_h + 1)
    left = jax.random.randint(k_left, (), 0, jnp.maximum(m_w, crop_w) - crop_w + 1)
    return crop_at(image, mask, (height, width), (m_h, m_w), (top, left), opts)


def flip_rotate(key, image, mask, opts: AugmentSpec):
    """Each enabled op with probability 1/2 (rot90: k uniform in 0..3, or {0, 2} for a
    non-square crop), hflip then vflip then rot90, image [h,w,C] and mask [h,w] together."""
    k_h, k_v, k_r = jax.random.split(key, 3)
    h = jax.random.bernoulli(k_h) if opts.hflip else None
    v = jax.random.bernoulli(k_v) if opts.vflip else None
    k = None
    if opts.rot90:
        k = jax.random.randint(k_r, (), 0, 4)
        k = k if opts.crop_size[0] == opts.crop_size[1] else (k % 2) * 2
    return flip_rotate_at(image, mask, h, v, k)


def flip_rotate_at(image, mask, h=None, v=None, k=None):
    """image [h,w,C] and mask [h,w] flipped left-right where h, then top-bottom where v, then
    rotated by k * 90 degrees counter-clockwise (k i32 in 0..3; a non-square image takes k
    in {0, 2}); None: that op is off (transforms.hflip, vflip, rot90)."""
    if h is not None:
        image, mask = jnp.where(h, image[:, ::-1], image), jnp.where(h, mask[:, ::-1], mask)
    if v is not None:
        image, mask = jnp.where(v, image[::-1], image), jnp.where(v, mask[::-1], mask)
    if k is not None:
        # Every branch of a switch has one output shape: a non-square image gets 0 and 180.
        ts = range(4) if image.shape[0] == image.shape[1] else (0, 2)
        turns = [lambda a, t=t: jnp.rot90(a, t, axes=(0, 1)) for t in ts]
        k = k if len(ts) == 4 else k // 2
        image = jax.lax.switch(k, turns, image)
        mask = jax.lax.switch(k, turns, mask)
    return image, mask


def elastic(key, image, mask, opts: AugmentSpec):
    """The host's elastic deformation (deform.elastic): N(0, sigma) displacements on a
    grid x grid lattice, bicubic in between; warp."""
    g = opts.elastic_grid
    coarse = opts.elastic_sigma * jax.random.normal(key, (2, g, g), jnp.float32)
    return elastic_at(image, mask, coarse)


def elastic_at(image, mask, coarse):
    """f32[h,w,C] (integer values) and int[h,w] warped by the displacements f32[2,g,g] on a
    g x g lattice, interpolated as deform.field_from does (deform.elastic_at)."""
    return deform.warp(image, mask, field_from(coarse, mask.shape), xp=jnp)


def field_from(coarse, size):
    """f32[2,h,w] from the lattice displacements f32[2,g,g] (deform.field_from's
    interpolation)."""
    g = coarse.shape[-1]
    rows = jnp.asarray(deform.cubic_matrix(size[0], g), jnp.float32)
    cols = jnp.asarray(deform.cubic_matrix(size[1], g), jnp.float32)
    hp = jax.lax.Precision.HIGHEST
    return jnp.einsum("hi,cij,wj->chw", rows, coarse, cols, precision=hp)


def _convert(x, alpha=1.0, beta=0.0):
    # mmseg's convert: x * alpha + beta, clipped to [0, 255], truncated.
    return jnp.floor(jnp.clip(x * alpha + beta, 0, 255))


def saturation_hue(image, alpha, shift):
    """appearance._saturation_hue in jnp: f32[h,w,3] RGB values -> same, rounded half up."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    value = jnp.maximum(jnp.maximum(r, g), b)
    chroma = value - jnp.minimum(jnp.minimum(r, g), b)
    inverse = jnp.where(chroma > 0, 1.0 / jnp.where(chroma > 0, chroma, 1.0), 0.0)
    hue = jnp.where(
        value == r,
        (g - b) * inverse,
        jnp.where(value == g, (b - r) * inverse + 2.0, (r - g) * inverse + 4.0),
    )
    hue = hue + shift + 12.0
    chroma = jnp.minimum(chroma * alpha, value)
    out = []
    for n in (5.0, 3.0, 1.0):
        k = jnp.mod(hue + n, 6.0)
        out.append(value - chroma * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0))
    return jnp.floor(jnp.stack(out, -1) + 0.5)


def photometric(key, image, *, brightness=32.0, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=18):
    """mmseg's PhotoMetricDistortion on f32[h,w,C] integer values, as appearance.photometric:
    each step with probability 1/2, contrast first or last, saturation and hue on RGB."""
    keys = jax.random.split(key, 9)
    on = [jax.random.bernoulli(k) for k in keys[:5]]  # brightness, first, contrast, sat, hue
    beta = jax.random.uniform(keys[5], (), jnp.float32, -brightness, brightness)
    alpha = jax.random.uniform(keys[6], (), jnp.float32, *contrast)
    sat_alpha = jax.random.uniform(keys[7], (), jnp.float32, *saturation)
    hue_shift = jax.random.randint(keys[8], (), -hue, hue + 1)
    return photometric_at(image, on, beta, alpha, sat_alpha, hue_shift)


def photometric_at(image, on, beta, alpha, sat_alpha, hue_shift):
    """photometric with its draws: on = bool (brightness, contrast first, contrast,
    saturation, hue); beta added, alpha the contrast factor, sat_alpha the saturation factor,
    hue_shift in OpenCV's 0..180 units (appearance.photometric_at)."""
    x = jnp.where(on[0], _convert(image, beta=beta), image)
    x = jnp.where(on[1] & on[2], _convert(x, alpha=alpha), x)
    if image.shape[-1] == 3:
        moved = saturation_hue(
            x, jnp.where(on[3], sat_alpha, 1.0), jnp.where(on[4], hue_shift / 30.0, 0.0)
        )
        x = jnp.where(on[3] | on[4], moved, x)
    return jnp.where(~on[1] & on[2], _convert(x, alpha=alpha), x)


def blur(image, s, max_radius: int, top: float = 255.0):
    """appearance.gaussian_blur's filter at sigma s on f32[h,w,C]: taps out to round(3 s)
    (at most max_radius), mirrored edges, rounded and clipped to [0, top]."""
    taps = jnp.arange(-max_radius, max_radius + 1, dtype=jnp.float32)
    weights = jnp.where(
        jnp.abs(taps) <= jnp.floor(3.0 * s + 0.5), jnp.exp(-0.5 * (taps / s) ** 2), 0.0
    )
    weights = weights / weights.sum()
    out = image
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (max_radius, max_radius)
        padded = jnp.pad(out, pad, mode="reflect")  # numpy's reflect is scipy's mirror
        n = out.shape[axis]
        out = sum(
            weights[i] * jax.lax.slice_in_dim(padded, i, i + n, axis=axis)
            for i in range(2 * max_radius + 1)
        )
    return jnp.floor(jnp.clip(out, 0, top) + 0.5)


def gaussian_blur(key, image, prob: float, sigma=BLUR_SIGMA, top: float = 255.0):
    """With probability prob, blur at sigma ~ U(sigma) (values clipped to [0, top])."""
    k_on, k_sigma = jax.random.split(key)
    s = jax.random.uniform(k_sigma, (), jnp.float32, *sigma)
    blurred = blur(image, s, int(np.floor(3.0 * sigma[1] + 0.5)), top)
    return jnp.where(jax.random.uniform(k_on) < prob, blurred, image)


def augment_example(key, image, mask, size, opts: AugmentSpec):
    """One example: image u8 or u16[Hc,Wc,C], mask int[Hc,Wc], size i32[2] -> (image
    [h,w,C] in its dtype, i32[h,w]), the chain of transforms.train_transform."""
    k_crop, k_flip, k_elastic, k_photo, k_blur = jax.random.split(key, 5)
    out, out_mask = rescale_crop(k_crop, image, mask, size, opts)
    out, out_mask = flip_rotate(k_flip, out, out_mask, opts)
    if opts.elastic_sigma > 0:
        out, out_mask = elastic(k_elastic, out, out_mask, opts)
    if opts.photometric:
        out = photometric(k_photo, out)
    if opts.blur_prob > 0:
        out = gaussian_blur(k_blur, out, opts.blur_prob, top=top_value(image))
    integer = jnp.issubdtype(image.dtype, jnp.integer)
    return out.astype(image.dtype if integer else jnp.uint8), out_mask


def augment_batch(key, batch: dict, opts: AugmentSpec) -> dict:
    """{"image": u8[B,Hc,Wc,C] (or u16), "mask": int[B,Hc,Wc], "size": i32[B,2]} (the padded
    canvas and each example's own size) -> {"image": u8[B,h,w,C] (or u16), "mask":
    i32[B,h,w]}. Example b uses fold_in(key, b): the same values whatever the batch's
    sharding."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch["image"].shape[0]))
    image, mask = jax.vmap(augment_example, in_axes=(0, 0, 0, 0, None))(
        keys, batch["image"], batch["mask"], batch["size"], opts
    )
    return {"image": image, "mask": mask}
