"""Xception39 (Yu et al., ECCV 2018): the light context path of BiSeNet, as the authors'
release (ycszen/TorchSeg, furnace/base_model/xception.py, `xception39`).

- stem "conv1": 3x3 conv 8 /2 + BN + ReLU, then a 3x3 max-pool /2 (padding 1);
- stages "layer1".."layer3": 4, 8 and 4 blocks of mid widths 16, 32, 64 and output widths
  4x that (64, 128, 256); each stage's first block has stride 2, so the stages end at
  strides 8, 16 and 32;
- block: a residual branch of three separable convs ("residual_branch_0..2": 3x3
  depthwise "conv1", no BN after it, then a 1x1 conv + BN "point_wise_cbr"), ReLU after
  the first two, the first carrying the stride (Cin -> mid -> mid -> 4*mid); a stage's
  first block projects its shortcut with one more separable conv ("proj": depthwise 3x3
  /2, 1x1 to 4*mid + BN, no ReLU); ReLU after the sum. The other blocks add x itself.

Names are the release's (conv1.conv, layer1.0.proj.point_wise_cbr.bn, ...), so its state
dicts load through jaxseg.models.pretrained. Every conv pads k // 2 on each side, so odd
sides round up at each stride. Parameters: 299,448 (BatchNorm running statistics not
counted), pinned in tests/test_models_xception39.py equal to a PyTorch twin.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.layers import ConvBN

# The release's xception39: blocks per stage, mid widths; outputs are EXPANSION * mid.
DEPTHS = (4, 8, 4)
MIDS = (16, 32, 64)
EXPANSION = 4
STEM = 8
WIDTHS = tuple(EXPANSION * m for m in MIDS)  # channels of layer1..layer3: 64, 128, 256


class SeparableConvBN(nn.Module):
    """3x3 depthwise conv (stride) "conv1" + 1x1 conv, BN, optional ReLU "point_wise_cbr":
    x [B,H,W,Cin] -> [B,H/stride,W/stride,features]."""

    features: int
    stride: int = 1
    relu: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        cin = x.shape[-1]
        x = layers.Conv(cin, 3, self.stride, groups=cin, dtype=self.dtype, name="conv1")(x)
        return ConvBN(self.features, 1, relu=self.relu, dtype=self.dtype, name="point_wise_cbr")(
            x, train
        )


class Block(nn.Module):
    """Xception39 block: x [B,H,W,Cin] -> [B,H/stride,W/stride,4*mid]. The shortcut is
    projected ("proj") when stride > 1, else x itself (then Cin must be 4*mid)."""

    mid: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt, out = self.dtype, EXPANSION * self.mid
        shortcut = x
        if self.stride > 1:
            shortcut = SeparableConvBN(out, self.stride, relu=False, dtype=dt, name="proj")(
                x, train
            )
        y = SeparableConvBN(self.mid, self.stride, dtype=dt, name="residual_branch_0")(x, train)
        y = SeparableConvBN(self.mid, dtype=dt, name="residual_branch_1")(y, train)
        y = SeparableConvBN(out, relu=False, dtype=dt, name="residual_branch_2")(y, train)
        return nn.relu(shortcut + y)


class Xception39(nn.Module):
    """x f32[B,H,W,3] -> dict of features in the compute dtype (any H, W; sides round up):

    "stem" [B,H/2,W/2,8] (conv1 + BN + ReLU, before the max-pool),
    "layer1" [B,H/8,W/8,64], "layer2" [B,H/16,W/16,128], "layer3" [B,H/32,W/32,256].

    The keys follow the release's stage names, so they sit one stride later than ResNet's:
    Xception39's layer1..layer3 are at the strides of ResNet's layer2..layer4.
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        dt = self.dtype
        x = ConvBN(STEM, 3, 2, dtype=dt, name="conv1")(x.astype(dt), train)
        features = {"stem": x}
        # nn.max_pool pads with -inf, as torch's MaxPool2d(3, 2, padding=1).
        x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, (blocks, mid) in enumerate(zip(DEPTHS, MIDS, strict=True)):
            for j in range(blocks):
                x = Block(mid, 2 if j == 0 else 1, dt, name=f"layer{i + 1}_{j}")(x, train)
            features[f"layer{i + 1}"] = x
        return features
