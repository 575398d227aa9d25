"""Fully connected CRF post-processing (Kraehenbuehl & Koltun, NIPS 2011), as DeepLab v1/v2
used it, by mean-field inference in pure JAX.

Energy: unary -log P(x_i) from the network's softmax, pairwise Potts terms
mu(l, l') = [l != l'] weighted by two Gaussian kernels of pixel positions p and colours I:

    k(i, j) = w_bi  exp(-|p_i - p_j|^2 / 2 theta_alpha^2 - |I_i - I_j|^2 / 2 theta_beta^2)
            + w_pos exp(-|p_i - p_j|^2 / 2 theta_gamma^2)

(the usual five parameters: bilateral weight, bilateral position and colour deviations,
spatial weight and deviation; positions in pixels, colours in 0..255 RGB). Each mean-field
iteration sets Q_i(l) = softmax_l(log P_i(l) + sum_{j != i} k(i, j) Q_j(l)), the Potts
form with the label-independent part dropped (it cancels in the normalisation).

Where the permutohedral lattice of the original approximates the sum over all pixels,
this one is exact inside a (window x window) neighbourhood of each pixel and ignores
pixels beyond it, as convolutional CRFs do (Teichmann & Cipolla, 2018): the kernel weights
of every offset are computed once, each iteration is then `window^2 - 1` shifted
multiply-adds, which accelerators run well. With a window reaching across the image it
equals the dense CRF exactly (tests/test_crf.py compares with a brute-force one).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax


class CRFError(ValueError):
    """An invalid CRFParams field: `field` names it, the message says why."""

    def __init__(self, field: str, message: str):
        super().__init__(f"crf {field}: {message}")
        self.field, self.reason = field, message


@dataclasses.dataclass(frozen=True)
class CRFParams:
    """The dense CRF's parameters; the config's `eval.crf` section is built from these fields.
    The defaults are DeepLab-LargeFOV's on PASCAL VOC (Chen et al., ICLR 2015, as its released
    test settings are widely quoted); membrane figures with other values are in
    docs/benchmarks.md.

    Weights are >= 0 (a negative one would reward label changes between similar pixels),
    deviations > 0 (pixels, and 0..255 colour units), `window` odd and >= 3.
    """

    bilateral_weight: float = 4.0  # w of the appearance kernel (position and colour)
    bilateral_xy_std: float = 121.0  # its position deviation, pixels
    bilateral_rgb_std: float = 5.0  # its colour deviation, 0..255 RGB units
    spatial_weight: float = 3.0  # w of the smoothness kernel (position only)
    spatial_xy_std: float = 3.0  # its position deviation, pixels
    iterations: int = 10  # mean-field iterations
    # Odd side of the neighbourhood where the pairwise sum is exact (pixels beyond it are left
    # out, as in convolutional CRFs); memory grows as window^2 x the batch's pixels.
    window: int = 11

    def __post_init__(self):
        for field in ("bilateral_weight", "spatial_weight"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value >= 0):
                raise CRFError(field, f"a weight must be a finite number >= 0, got {value}")
        if self.bilateral_weight == self.spatial_weight == 0:  # softmax(log P) = P: no effect
            raise CRFError("bilateral_weight", "and spatial_weight are both 0: nothing to refine")
        for field in ("bilateral_xy_std", "bilateral_rgb_std", "spatial_xy_std"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value > 0):
                raise CRFError(field, f"a standard deviation must be > 0, got {value}")
        if self.iterations < 1:
            raise CRFError(
                "iterations", f"needs 1 or more mean-field iterations, got {self.iterations}"
            )
        if self.window < 3 or self.window % 2 == 0:
            raise CRFError("window", f"must be odd and >= 3, got {self.window}")


def _offsets(window: int) -> list[tuple[int, int]]:
    r = window // 2
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy, dx) != (0, 0)]


def kernel_weights(
    image: jax.Array, params: CRFParams, valid: jax.Array | None = None
) -> jax.Array:
    """k(i, i + d) for every window offset d != 0: f32[D,B,H,W]; zero where i + d lies
    outside the image or outside `valid` (bool[B,H,W], e.g. an image's own region)."""
    img = image.astype(jnp.float32)
    inside = jnp.ones(img.shape[:3], jnp.float32)
    if valid is not None:
        inside = valid.astype(jnp.float32)
    r = params.window // 2
    pad = ((0, 0), (r, r), (r, r))
    padded_img = jnp.pad(img, (*pad, (0, 0)))
    padded_inside = jnp.pad(inside, pad)

    def weight(offset):  # one offset's weights, [B,H,W]; vmapped: one program for all
        dy, dx = offset[0], offset[1]
        neighbour = lax.dynamic_slice(padded_img, (0, r + dy, r + dx, 0), img.shape)
        there = lax.dynamic_slice(padded_inside, (0, r + dy, r + dx), inside.shape)
        d2 = (dy * dy + dx * dx).astype(jnp.float32)
        colour = jnp.sum((img - neighbour) ** 2, axis=-1)
        k = params.bilateral_weight * jnp.exp(
            -d2 / (2 * params.bilateral_xy_std**2) - colour / (2 * params.bilateral_rgb_std**2)
        )
        k = k + params.spatial_weight * jnp.exp(-d2 / (2 * params.spatial_xy_std**2))
        return k * there * inside

    return jax.vmap(weight)(jnp.asarray(_offsets(params.window), jnp.int32))


def mean_field(
    probs: jax.Array,
    image: jax.Array,
    params: CRFParams,
    valid: jax.Array | None = None,
    unroll: bool | None = None,
) -> jax.Array:
    """Refined probabilities f32[B,H,W,K] from softmax probs f32[B,H,W,K] and the image
    [B,H,W,C] (u8 or float in 0..255). jit-able; `params` is static.

    unroll: how each iteration sums its `window^2 - 1` messages, one result either way.
    False: a `lax.scan` over the offsets (one neighbour map alive at a time); True: an
    unrolled loop that XLA fuses into one kernel per iteration. None (default) unrolls
    on accelerators and scans on a CPU, the faster of the two where each was measured
    (benchmarks/crf_speed.py, docs/benchmarks.md: on an H200 at 512x512, 21 classes,
    unrolled 1.6-2.8x faster; on the CPU, the scan 1.2x).
    """
    if unroll is None:
        unroll = jax.default_backend() != "cpu"
    probs = probs.astype(jnp.float32)
    unary = jnp.log(jnp.maximum(probs, jnp.finfo(jnp.float32).tiny))
    weights = kernel_weights(image, params, valid)  # [D,B,H,W]
    offsets = _offsets(params.window)
    r = params.window // 2
    h, w = probs.shape[1:3]

    def message_scanned(padded, q):
        table = jnp.asarray(offsets, jnp.int32) + r  # read positions in the padded map

        def add(message, item):
            (y, x), weight = item
            neighbour = lax.dynamic_slice(padded, (0, y, x, 0), q.shape)
            return message + weight[..., None] * neighbour, None

        message, _ = lax.scan(add, jnp.zeros_like(q), ((table[:, 0], table[:, 1]), weights))
        return message

    def message_unrolled(padded, q):
        message = jnp.zeros_like(q)
        for i, (dy, dx) in enumerate(offsets):
            neighbour = padded[:, r + dy : r + dy + h, r + dx : r + dx + w]
            message = message + weights[i][..., None] * neighbour
        return message

    def iteration(q, _):
        padded = jnp.pad(q, ((0, 0), (r, r), (r, r), (0, 0)))
        message = (message_unrolled if unroll else message_scanned)(padded, q)
        return jax.nn.softmax(unary + message, axis=-1), None

    q, _ = lax.scan(iteration, probs, None, length=params.iterations)
    return q
