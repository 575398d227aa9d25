"""Per-pixel linear classifier (one 1x1 convolution): the floor any real model must beat."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.table import register


@register("linear")
class PixelLinear(nn.Module):
    """x: f32[B,H,W,C] -> (logits f32[B,H,W,num_classes], aux {}); sees one pixel at a time."""

    num_classes: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype)(x.astype(self.dtype))
        return logits.astype(jnp.float32), {}
