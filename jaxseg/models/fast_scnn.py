"""Fast-SCNN (Poudel et al., 2019), Tables 1-3 of the paper.

- learning to downsample: 3x3 conv 32 /2, depthwise-separable convs 48 /2 and 64 /2
  (stride 8, the high-resolution branch);
- global feature extractor: inverted-residual bottlenecks (expansion 6) 64 x3 /2,
  96 x3 /2, 128 x3 /1 (stride 32), then pyramid pooling over bins 1, 2, 3, 6;
- feature fusion: the low-resolution branch resized to the high-resolution one (x4
  when sides are multiples of 32), depthwise 3x3 with dilation 4 (Table 3), 1x1 conv;
  the high-resolution branch 1x1 conv; sum, ReLU;
- classifier: two depthwise-separable convs 128, dropout 0.1, 1x1 conv to K;
  logits resized bilinearly to the input.
Every conv is followed by BatchNorm, and by ReLU except the linear bottleneck
projections and the two fusion 1x1 convs.

Parameters: 1,138,051 for 19 classes, 2.5% over the paper's 1.11M. 23,680 of them are
BatchNorm scales and offsets; without those the count is 1,114,371, 0.4% over, so the
paper's figure most likely leaves BatchNorm out (it gives no per-layer counts). The
remainder is the layout the paper leaves open: 256 biases on the fusion 1x1 convs (as
the common PyTorch ports) and pyramid pooling branches of 128/4 channels fused by a
1x1 conv from 256 to 128 (the paper gives only the output width).

Weights of the common PyTorch port (Tramac/Fast-SCNN-pytorch) load by its key names
(`torch_renames`), but it computes another function in three places: its fusion depthwise
conv is not dilated, its first conv is unpadded, and its resizes use align_corners=True;
tests/test_models_fast_scnn.py's twin (with jaxseg's choices there) matches to 1e-7.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.layers import (
    ATROUS_IMPLS,
    Conv,
    ConvBN,
    _check,
    adaptive_avg_pool,
    resize,
    torch_default_init,
)
from jaxseg.models.table import register


class DSConv(nn.Module):
    """Depthwise-separable conv: depthwise 3x3 /stride + BN + ReLU, 1x1 + BN + ReLU."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = ConvBN(x.shape[-1], 3, self.stride, depthwise=True, dtype=self.dtype, name="dw")(
            x, train
        )
        return ConvBN(self.features, dtype=self.dtype, name="pw")(x, train)


class Bottleneck(nn.Module):
    """MobileNetV2 linear bottleneck: 1x1 expand xt, depthwise 3x3 /stride, linear 1x1;
    residual when stride 1 and channels agree."""

    features: int
    stride: int = 1
    expansion: int = 6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        hidden, dt = x.shape[-1] * self.expansion, self.dtype
        y = ConvBN(hidden, dtype=dt, name="expand")(x, train)
        y = ConvBN(hidden, 3, self.stride, depthwise=True, dtype=dt, name="dw")(y, train)
        y = ConvBN(self.features, relu=False, dtype=dt, name="project")(y, train)
        return y + x if self.stride == 1 and x.shape[-1] == self.features else y


class PyramidPooling(nn.Module):
    """PSPNet pooling: per bin, adaptive average pool + 1x1 conv to C/4, resized back;
    concatenated with x and fused by a 1x1 conv. [B,H,W,C] -> [B,H,W,features]."""

    features: int = 128
    bins: tuple[int, ...] = (1, 2, 3, 6)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        branches = [x]
        for i, b in enumerate(self.bins):
            y = ConvBN(x.shape[-1] // 4, dtype=self.dtype, name=f"pool_{i}")(
                adaptive_avg_pool(x, b), train
            )
            branches.append(resize(y, x.shape[1:3]))
        return ConvBN(self.features, dtype=self.dtype, name="out")(
            jnp.concatenate(branches, axis=-1), train
        )


def _conv_bn(flax: str, torch: str, conv: str, bn: str) -> tuple[tuple[str, str], ...]:
    """Renames of a ConvBN's "conv" and "bn" under `flax` (a regex) to `torch`.<conv>/<bn>."""
    return ((rf"^{flax}\.conv\.", rf"{torch}.{conv}."), (rf"^{flax}\.bn\.", rf"{torch}.{bn}."))


# The keys of the common PyTorch port, Tramac/Fast-SCNN-pytorch models/fast_scnn.py: its
# _Conv, _DWConv and _DSConv each hold one nn.Sequential "conv" (conv, BN, ReLU, ...), its
# bottlenecks one Sequential "block" (_Conv, _DWConv, 1x1 conv, BN).
_GFE, _B = "global_feature_extractor", r"(bottleneck\d\.\d)"
TORCH_RENAMES = (
    *_conv_bn(rf"{_B}\.expand", rf"{_GFE}.\1.block.0.conv", "0", "1"),
    *_conv_bn(rf"{_B}\.dw", rf"{_GFE}.\1.block.1.conv", "0", "1"),
    *_conv_bn(rf"{_B}\.project", rf"{_GFE}.\1.block", "2", "3"),
    *_conv_bn(r"(\w+dsconv\d)\.dw", r"\1.conv", "0", "1"),
    *_conv_bn(r"(\w+dsconv\d)\.pw", r"\1.conv", "3", "4"),
    (r"^downsample_(dsconv\d)\.", r"learning_to_downsample.\1."),
    (r"^classifier_(dsconv\d)\.", r"classifier.\1."),
    (r"^classifier_conv\.", "classifier.conv.1."),
    *_conv_bn("downsample_conv", "learning_to_downsample.conv.conv", "0", "1"),
    *((rf"^ppm\.pool\.{i}\.", f"ppm.conv{i + 1}.") for i in range(4)),
    *_conv_bn(r"ppm\.(\w+)", rf"{_GFE}.ppm.\1.conv", "0", "1"),
    *_conv_bn("fusion_dw", "feature_fusion.dwconv.conv", "0", "1"),
    *_conv_bn("fusion_(low|high)", r"feature_fusion.conv_\1er_res", "0", "1"),
)


@register("fast_scnn")
class FastSCNN(nn.Module):
    """x: f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], aux {})."""

    num_classes: int = 19
    atrous_impl: str = "plain"  # plain | space_to_batch: the fusion's dilated depthwise conv
    dtype: Any = jnp.float32

    torch_renames: ClassVar[tuple[tuple[str, str], ...]] = TORCH_RENAMES

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        _check("atrous_impl", self.atrous_impl, ATROUS_IMPLS)
        dt = self.dtype
        # Learning to downsample: stride 8.
        high = ConvBN(32, 3, 2, dtype=dt, name="downsample_conv")(x.astype(dt), train)
        high = DSConv(48, 2, dt, name="downsample_dsconv1")(high, train)
        high = DSConv(64, 2, dt, name="downsample_dsconv2")(high, train)

        # Global feature extractor: stride 32.
        low = high
        for stage, (features, stride) in enumerate([(64, 2), (96, 2), (128, 1)], start=1):
            for i in range(3):
                low = Bottleneck(
                    features, stride if i == 0 else 1, dtype=dt, name=f"bottleneck{stage}_{i}"
                )(low, train)
        low = PyramidPooling(128, dtype=dt, name="ppm")(low, train)

        # Feature fusion; resizing to the high branch's size (not x4) covers odd sides.
        low = resize(low, high.shape[1:3])
        low = ConvBN(
            128,
            3,
            dilation=4,
            depthwise=True,
            atrous_impl=self.atrous_impl,
            dtype=dt,
            name="fusion_dw",
        )(low, train)
        low = ConvBN(128, relu=False, use_bias=True, dtype=dt, name="fusion_low")(low, train)
        high = ConvBN(128, relu=False, use_bias=True, dtype=dt, name="fusion_high")(high, train)
        y = nn.relu(high + low)

        # Classifier.
        y = DSConv(128, dtype=dt, name="classifier_dsconv1")(y, train)
        y = DSConv(128, dtype=dt, name="classifier_dsconv2")(y, train)
        y = nn.Dropout(0.1, deterministic=not train)(y)
        y = Conv(
            self.num_classes,
            1,
            use_bias=True,
            dtype=dt,
            kernel_init=torch_default_init,
            name="classifier_conv",
        )(y)
        return resize(y, x.shape[1:3]).astype(jnp.float32), {}
