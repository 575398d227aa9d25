"""FC-DenseNet, "The One Hundred Layers Tiramisu" (Jegou et al., 2017), Table 2 and Fig. 1.

- a 3x3 conv to 48 feature maps;
- down path: per level a dense block (each layer BN + ReLU + 3x3 conv to `growth`
  maps + dropout 0.2, its output concatenated to its input), the block's whole output
  kept as the skip, then transition down (BN + ReLU + 1x1 conv keeping the width +
  dropout 0.2 + 2x2 max-pool);
- bottleneck dense block, of which only the new maps go up (the concatenation with its
  input would make the up path explode);
- up path: transition up (3x3 stride-2 transposed conv to the number of maps the
  previous block added, cropped to the skip's size), concatenation with the skip, a
  dense block; again only its new maps go to the next transition up, except after the
  last block, whose whole stack feeds the 1x1 classifier.

Variants (`variant`): "56" 4 layers per block, growth 12; "67" 5 layers, growth 16;
"103" blocks (4, 5, 7, 10, 12 | 15 | 12, 10, 7, 5, 4), growth 16; five poolings each.
Convolutions carry biases, as in the authors' Lasagne code (SimJeg/FC-DenseNet) and the
common PyTorch port (bfortuner/pytorch_tiramisu), with whose module layout the names
agree (firstconv, denseBlocksDown_i_layers_j_norm/conv, transDownBlocks_i, bottleneck,
transUp_i, denseBlocksUp_i, finalConv). Pooling is in ceil mode, so any H, W works.
Dropout is per element, as Lasagne's DropoutLayer (the PyTorch port uses channel dropout).

Parameters (11 classes, CamVid): 56: 1,376,795; 67: 3,463,243; 103: 9,322,091, against
the paper's 1.5 M / 3.5 M / 9.4 M (-8.2 %, -1.1 %, -0.8 %), pinned in
tests/test_models_fc_densenet.py, equal to a PyTorch twin of the port. The paper's 1.5 M
for the 56 does not follow from its Table 2 layout with growth 12 (the port gives our count).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.layers import TRANSPOSE_IMPLS, Conv, ConvTranspose3x3, _check, batch_norm
from jaxseg.models.table import register

# variant -> (layers per dense block: 5 down, bottleneck, 5 up; growth rate)
VARIANTS = {
    "56": ((4,) * 11, 12),
    "67": ((5,) * 11, 16),
    "103": ((4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4), 16),
}
FIRST = 48  # maps of the first 3x3 conv
DROPOUT = 0.2
# The authors' Lasagne code initialises every conv with HeUniform (fan_in, gain sqrt 2).
he_uniform = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")


class DenseLayer(nn.Module):
    """BN + ReLU + 3x3 conv (bias) to `growth` maps + dropout: [B,H,W,C] -> [B,H,W,growth]."""

    growth: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.relu(batch_norm(train, self.dtype, name="norm")(x))
        x = Conv(
            self.growth, 3, use_bias=True, dtype=self.dtype, kernel_init=he_uniform, name="conv"
        )(x)
        return nn.Dropout(DROPOUT, deterministic=not train)(x)


class DenseBlock(nn.Module):
    """x [B,H,W,C] -> (x ++ new maps [B,H,W,C+n*growth], new maps [B,H,W,n*growth])."""

    n_layers: int
    growth: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        new = []
        for j in range(self.n_layers):
            y = DenseLayer(self.growth, self.dtype, name=f"layers_{j}")(x, train)
            new.append(y)
            x = jnp.concatenate([x, y], axis=-1)
        return x, jnp.concatenate(new, axis=-1)


class TransitionDown(nn.Module):
    """BN + ReLU + 1x1 conv (same width) + dropout + 2x2 max-pool: [B,H,W,C] ->
    [B,ceil(H/2),ceil(W/2),C] (odd sides: the last row/column pooled alone)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = nn.relu(batch_norm(train, self.dtype, name="norm")(x))
        y = Conv(
            x.shape[-1], 1, use_bias=True, dtype=self.dtype, kernel_init=he_uniform, name="conv"
        )(y)
        y = nn.Dropout(DROPOUT, deterministic=not train)(y)
        h, w = y.shape[1:3]
        # -inf padding keeps odd sides (ceil mode): the skip keeps every pixel.
        return nn.max_pool(y, (2, 2), (2, 2), padding=((0, h % 2), (0, w % 2)))


@register("fc_densenet")
class FCDenseNet(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], aux {})."""

    num_classes: int
    variant: str = "103"  # "56" | "67" | "103"
    transpose_impl: str = "depth_to_space"  # or plain: the same 3x3 transposed convs
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        variant = self.variant
        if variant not in VARIANTS:
            raise ValueError(f"variant={self.variant!r}; valid: {', '.join(VARIANTS)}")
        _check("transpose_impl", self.transpose_impl, TRANSPOSE_IMPLS)
        blocks, growth = VARIANTS[variant]
        n_pool, dt = len(blocks) // 2, self.dtype
        x = Conv(FIRST, 3, use_bias=True, dtype=dt, kernel_init=he_uniform, name="firstconv")(
            x.astype(dt)
        )
        skips = []
        for i in range(n_pool):
            x, _ = DenseBlock(blocks[i], growth, dt, name=f"denseBlocksDown_{i}")(x, train)
            skips.append(x)
            x = TransitionDown(dt, name=f"transDownBlocks_{i}")(x, train)
        _, new = DenseBlock(blocks[n_pool], growth, dt, name="bottleneck")(x, train)
        for i in range(n_pool):
            skip = skips[-1 - i]
            y = ConvTranspose3x3(
                new.shape[-1], transpose_impl=self.transpose_impl, dtype=dt, name=f"transUp_{i}"
            )(new)
            # 2h+1 rows cover the skip's 2h or 2h-1: crop the centre as the reference does.
            top = (y.shape[1] - skip.shape[1]) // 2
            left = (y.shape[2] - skip.shape[2]) // 2
            y = y[:, top : top + skip.shape[1], left : left + skip.shape[2]]
            x = jnp.concatenate([y, skip], axis=-1)
            x, new = DenseBlock(blocks[n_pool + 1 + i], growth, dt, name=f"denseBlocksUp_{i}")(
                x, train
            )
        logits = Conv(
            self.num_classes, 1, use_bias=True, dtype=dt, kernel_init=he_uniform, name="finalConv"
        )(x)
        return logits.astype(jnp.float32), {}
