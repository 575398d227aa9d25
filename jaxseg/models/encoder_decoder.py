"""The plain encoder-decoder baseline: no skips, no pretrained backbone.

Two encoder stages (3x3 conv + BN + ReLU, 2x2 max-pool) of widths w and 2w, then
two 2x2 stride-2 transposed convs (+ BN + ReLU) of widths 2w and w, mirroring the
encoder's resolutions (H/2 at 2w, H at w), and a 1x1 classifier.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.table import register


@register("encoder_decoder")
class EncoderDecoder(nn.Module):
    """x f32[B,H,W,C] (any H, W: padded to a multiple of 4 inside, logits cropped back)
    -> (logits f32[B,H,W,num_classes], {}).

    base_width w gives stage widths w, 2w; transpose_impl picks
    layers.ConvTranspose2x2's formulation ("plain" or "depth_to_space"), the same
    function either way.
    """

    num_classes: int
    base_width: int = 64
    transpose_impl: str = "depth_to_space"  # or plain: the same function
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        if self.transpose_impl not in layers.TRANSPOSE_IMPLS:
            raise ValueError(
                f"transpose_impl={self.transpose_impl!r}; valid: "
                + ", ".join(layers.TRANSPOSE_IMPLS)
            )
        dt, w = self.dtype, self.base_width
        height, width = x.shape[1:3]
        x = jnp.pad(x, ((0, 0), (0, -height % 4), (0, -width % 4), (0, 0))).astype(dt)
        for i, features in enumerate((w, 2 * w)):
            # No conv bias: the BatchNorm right after it has one.
            x = layers.Conv(features, 3, dtype=dt, name=f"enc{i}_conv")(x)
            x = nn.relu(layers.batch_norm(train, dt, name=f"enc{i}_bn")(x))
            x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))
        for i, features in enumerate((2 * w, w)):
            x = layers.ConvTranspose2x2(
                features,
                use_bias=False,
                transpose_impl=self.transpose_impl,
                dtype=dt,
                name=f"dec{i}_up",
            )(x)
            x = nn.relu(layers.batch_norm(train, dt, name=f"dec{i}_bn")(x))
        logits = layers.Conv(
            self.num_classes,
            1,
            use_bias=True,
            kernel_init=layers.torch_default_init,
            dtype=dt,
            name="classifier",
        )(x)
        return logits[:, :height, :width].astype(jnp.float32), {}
