"""Semantic FPN (Kirillov et al., 2019, "Panoptic Feature Pyramid Networks"): an FPN neck
on ResNet-50/101 (or 18/34) and the semantic segmentation branch, as mmsegmentation's fpn_r50 config
(FPN with 256 channels and 4 outputs; FPNHead with 128 channels, dropout 0.1) on the zoo's
torchvision ResNet (mmseg uses ResNetV1c's deep stem: 3 convs instead of one 7x7).

Neck: a 1x1 lateral conv (with bias) per stage (strides 4-32), top-down sums with nearest
upsampling (torch's index rule), a 3x3 conv (with bias) on each level. Head: per level
max(1, log2(stride / 4)) 3x3 conv + BN + ReLU to 128 channels, each but the stride-4
level's followed by 2x bilinear upsampling; the levels summed at stride 4; dropout 0.1
and a 1x1 classifier; logits upsampled to the input.

Module names follow mmseg's state dict (`neck.lateral_convs.0.conv`, `neck.fpn_convs.0.conv`,
`decode_head.scale_heads.0.0.conv`, `decode_head.conv_seg`); the backbone's follow
torchvision's, so its ImageNet ResNet files load.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.layers import Conv, ConvBN, resize, torch_default_init
from jaxseg.models.resnet import ResNet
from jaxseg.models.table import register

STRIDES = (4, 8, 16, 32)


def nearest_resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """F.interpolate(mode="nearest"): output row i reads input row floor(i * H_in / H_out)
    (jax.image.resize's nearest uses pixel centres, which differs at odd sizes)."""
    h, w = x.shape[1:3]
    rows = (jnp.arange(size[0]) * h) // size[0]
    cols = (jnp.arange(size[1]) * w) // size[1]
    return x[:, rows][:, :, cols]


class _ConvModule(nn.Module):
    """mmcv ConvModule without norm: a conv with bias held as "conv"."""

    features: int
    kernel_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return Conv(self.features, self.kernel_size, use_bias=True, dtype=self.dtype, name="conv")(
            x
        )


class FPN(nn.Module):
    """[4 x [B,h_i,w_i,C_i]] (strides 4..32) -> [4 x [B,h_i,w_i,channels]]."""

    channels: int = 256
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: list[jax.Array]) -> list[jax.Array]:
        laterals = [
            _ConvModule(self.channels, 1, self.dtype, name=f"lateral_convs_{i}")(f)
            for i, f in enumerate(features)
        ]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + nearest_resize(
                laterals[i], laterals[i - 1].shape[1:3]
            )
        return [
            _ConvModule(self.channels, 3, self.dtype, name=f"fpn_convs_{i}")(x)
            for i, x in enumerate(laterals)
        ]


class FPNHead(nn.Module):
    """The semantic branch. 4 FPN levels -> stride-4 logits [B,h_1,w_1,num_classes]."""

    num_classes: int
    channels: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, levels: list[jax.Array], train: bool) -> jax.Array:
        out = None
        for i, (x, stride) in enumerate(zip(levels, STRIDES, strict=True)):
            for k in range(max(1, int(math.log2(stride) - math.log2(STRIDES[0])))):
                x = ConvBN(self.channels, 3, dtype=self.dtype, name=f"scale_heads_{i}_{k * 2}")(
                    x, train
                )
                if stride != STRIDES[0]:
                    x = resize(x, (2 * x.shape[1], 2 * x.shape[2]))
            out = x if out is None else out + resize(x, out.shape[1:3])
        out = nn.Dropout(0.1, broadcast_dims=(1, 2), deterministic=not train)(out)
        return Conv(
            self.num_classes,
            1,
            use_bias=True,
            dtype=self.dtype,
            kernel_init=torch_default_init,
            name="conv_seg",
        )(out)


@register("semantic_fpn")
class SemanticFPN(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], {}).

    backbone: resnet50 (default) or resnet101 (the reference's), resnet18/34 (narrower
    laterals' inputs, for small runs); output stride 32."""

    num_classes: int
    backbone: str = "resnet50"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        feats = ResNet(self.backbone, 32, dtype=self.dtype, name="backbone")(x, train)
        levels = FPN(dtype=self.dtype, name="neck")([feats[f"layer{i}"] for i in range(1, 5)])
        logits = FPNHead(self.num_classes, dtype=self.dtype, name="decode_head")(levels, train)
        return resize(logits.astype(jnp.float32), x.shape[1:3]), {}
