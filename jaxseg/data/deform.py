"""Elastic deformation on the host (the U-Net paper's, Ronneberger et al. 2015): random
displacements on a coarse lattice, interpolated bicubically, and the warp of image and mask
together. cubic_matrix and warp serve the device twin (jaxseg.augment) as well: warp takes
numpy or jax.numpy, so both paths share this arithmetic.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=16)
def cubic_matrix(n_out: int, n_in: int) -> np.ndarray:
    """f64[n_out, n_in]: cubic convolution (Keys, a = -0.5) from n_in grid points to n_out
    samples, the end points of both aligned (sample i sits at i * (n_in - 1) / (n_out - 1)),
    indices beyond the grid clamped to its edge. The same matrix serves the host and the
    device elastic deformation."""
    out = np.zeros((n_out, n_in))
    positions = np.arange(n_out) * ((n_in - 1) / max(n_out - 1, 1))
    for i, p in enumerate(positions):
        base = int(np.floor(p))
        for j in range(base - 1, base + 3):
            d = abs(p - j)
            w = (1.5 * d - 2.5) * d * d + 1 if d <= 1 else ((-0.5 * d + 2.5) * d - 4) * d + 2
            if d < 2:
                out[i, min(max(j, 0), n_in - 1)] += w
    return out


def field_from(coarse: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """f32[2,h,w] displacements (rows, columns) in pixels from displacements f64[2,g,g] on a
    g x g lattice spread over the image, interpolated bicubically (cubic_matrix)."""
    grid = coarse.shape[-1]
    rows, cols = cubic_matrix(size[0], grid), cubic_matrix(size[1], grid)
    return np.stack([rows @ coarse[c] @ cols.T for c in range(2)]).astype(np.float32)


def elastic_field(rng: np.random.Generator, size: tuple[int, int], sigma: float, grid: int):
    """f32[2,h,w] displacements (rows, columns) in pixels: N(0, sigma) on a grid x grid
    lattice spread over the image, interpolated bicubically (Ronneberger et al. 2015)."""
    return field_from(rng.normal(0.0, sigma, (2, grid, grid)), size)


def elastic_at(image: np.ndarray, mask: np.ndarray, coarse: np.ndarray):
    """image u8 or u16[H,W,C] and mask int[H,W] warped by field_from(coarse): (the image in
    its dtype, the mask)."""
    out, out_mask = warp(image, mask, field_from(coarse, mask.shape))
    return out.astype(image.dtype), out_mask


def elastic(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    sigma: float = 10.0,
    grid: int = 3,
):
    """The U-Net paper's elastic deformation of image u8[H,W,C] and mask int[H,W] together:
    warp by the field of elastic_field. sigma 0 draws nothing and returns the inputs."""
    if sigma <= 0:
        return image, mask
    return elastic_at(image, mask, rng.normal(0.0, sigma, (2, grid, grid)))


def warp(image, mask, field, xp=np):
    """image u8[H,W,C] resampled bilinearly and mask int[H,W] by nearest neighbour (no label
    invented), both at (y + field[0], x + field[1]), edges replicated. Returns the image
    rounded to integer values in float32 (and the mask). xp: numpy here, jax.numpy in the
    train step (jaxseg.augment), so both paths share this arithmetic."""
    height, width = mask.shape
    y = xp.clip(xp.arange(height, dtype=xp.float32)[:, None] + field[0], 0, height - 1)
    x = xp.clip(xp.arange(width, dtype=xp.float32)[None, :] + field[1], 0, width - 1)
    # Clamping the coordinates is replicating the edge. Nearest rounds half up.
    out_mask = mask[xp.floor(y + 0.5).astype(xp.int32), xp.floor(x + 0.5).astype(xp.int32)]
    y0, x0 = xp.floor(y), xp.floor(x)
    fy, fx = (y - y0)[..., None], (x - x0)[..., None]
    y0, x0 = y0.astype(xp.int32), x0.astype(xp.int32)
    y1, x1 = xp.minimum(y0 + 1, height - 1), xp.minimum(x0 + 1, width - 1)
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return xp.floor(top * (1 - fy) + bottom * fy + 0.5), out_mask
