"""VGG16 backbone (Simonyan & Zisserman, 2015) in torchvision's `features` layout.

Submodules are named after torchvision's `vgg16().features` / `vgg16_bn().features`
indices ("features_0", "features_2", ... without BatchNorm; conv, BN, ReLU per layer
with it, so "features_0", "features_1", "features_3", ...): a model that holds this
backbone under the name "backbone" loads an ImageNet vgg16 / vgg16_bn state dict
through pretrained.convert_state_dict (its "features.N.*" fallback).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers

# torchvision's configuration "D": conv widths, "M" = 2x2 stride-2 max-pool.
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_blocks() -> list[tuple[int, ...]]:
    """The conv widths of each of the 5 blocks: [(64, 64), (128, 128), ..., (512, 512, 512)]."""
    blocks, block = [], []
    for v in VGG16_CFG:
        if v == "M":
            blocks.append(tuple(block))
            block = []
        else:
            block.append(v)
    return blocks


class VGG16(nn.Module):
    """x f32[B,H,W,3] -> dict of features, for block i = 1..5 (stride 2**i after pooling):

    - "block{i}": the block's last ReLU output before pooling, [B,H/2**(i-1),W/2**(i-1),C_i];
    - "pool{i}": after the 2x2 stride-2 max-pool, [B,H/2**i,W/2**i,C_i] (odd sides floor,
      as torch's MaxPool2d);
    - "argmax{i}" (only with with_argmax): int32 position 0..3 of each max in its 2x2
      window (layers.max_pool_with_argmax), for SegNet's unpooling; then every
      block's input must have even sides (H, W multiples of 32).

    C_i = 64, 128, 256, 512, 512. batch_norm=True is torchvision's vgg16_bn.

    deeplab=True is DeepLab's VGG16 (the authors' prototxt): 3x3 max-pools padded by 1,
    stride 2 after blocks 1-3 (sides ceil(n/2), as torch; Caffe's ceil mode adds a row
    for even sides) and stride 1 after blocks 4-5, block 5's convs dilated by 2: pool5 is
    at stride 8 ("pool4"/"pool5" then have stride 8 too).
    """

    batch_norm: bool = False
    with_argmax: bool = False
    deeplab: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        if self.with_argmax and (x.shape[1] % 32 or x.shape[2] % 32):
            raise ValueError(f"VGG16(with_argmax=True) needs sides divisible by 32, got {x.shape}")
        x = x.astype(self.dtype)
        feats = {}
        index = 0  # position in torchvision's nn.Sequential `features`
        for block, widths in enumerate(vgg16_blocks(), start=1):
            for width in widths:
                x = layers.Conv(
                    width,
                    3,
                    dilation=2 if self.deeplab and block == 5 else 1,
                    use_bias=True,
                    dtype=self.dtype,
                    name=f"features_{index}",
                )(x)
                index += 1
                if self.batch_norm:
                    x = layers.batch_norm(train, self.dtype, name=f"features_{index}")(x)
                    index += 1
                x = nn.relu(x)
                index += 1
            feats[f"block{block}"] = x
            if self.deeplab:
                stride = 2 if block <= 3 else 1
                x = nn.max_pool(x, (3, 3), (stride, stride), padding=((1, 1), (1, 1)))
            elif self.with_argmax:
                x, feats[f"argmax{block}"] = layers.max_pool_with_argmax(x)
            else:
                x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))
            feats[f"pool{block}"] = x
            index += 1
        return feats
