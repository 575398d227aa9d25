"""MobileNetV2 (Sandler et al., 2018) feature extractor, as torchvision's mobilenet_v2().features.

Inverted residual blocks (1x1 expand + BN + ReLU6 unless the expansion is 1, 3x3
depthwise /stride + BN + ReLU6, linear 1x1 projection + BN, residual when stride 1 and
widths agree), a 3x3 stem conv 32 /2 and a last 1x1 conv to 1280. BatchNorm as torch's
default (eps 1e-5, momentum 0.1). output_stride 16 or 8 trades the last strides for
dilation as DeepLab's MobileNetV2 backbones (the stage whose stride is removed keeps
dilation 1 in its first block's depthwise conv, the later ones use the new rate).

Names are torchvision's: "0_0"/"0_1" (stem conv, BN), "i_conv_j..." for features[i].conv[j]
("i_conv_0_0" expand conv, "i_conv_1_0" depthwise, "i_conv_2" projection, "i_conv_3" its
BN; one index less without expansion), "18_0"/"18_1". Used on its own, the ImageNet file
("features.N...") loads through torch_renames; inside a segmentation model (named
"backbone") map the file with mobilenetv3.imagenet_to_backbone first, as for MobileNetV3.
torchvision's count of the whole classifier is 3,504,872; the features alone 2,223,872.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.layers import ATROUS_IMPLS, Conv, _check, batch_norm

# torchvision's inverted_residual_setting: expansion t, channels c, blocks n, stride s.
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
SETTING += ((6, 160, 3, 2), (6, 320, 1, 1))
STEM, LAST = 32, 1280
OUTPUT_STRIDES = (8, 16, 32)


class InvertedResidual(nn.Module):
    """x [B,H,W,Cin] -> [B,H/stride,W/stride,out]."""

    out: int
    expansion: int
    stride: int = 1
    dilation: int = 1
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt, cin, j = self.dtype, x.shape[-1], 0
        hidden = cin * self.expansion
        y = x
        if self.expansion != 1:
            y = Conv(hidden, 1, dtype=dt, name=f"conv_{j}_0")(y)
            y = jax.nn.relu6(batch_norm(train, dt, name=f"conv_{j}_1")(y))
            j += 1
        y = Conv(
            hidden,
            3,
            self.stride,
            self.dilation,
            groups=hidden,
            atrous_impl=self.atrous_impl,
            dtype=dt,
            name=f"conv_{j}_0",
        )(y)
        y = jax.nn.relu6(batch_norm(train, dt, name=f"conv_{j}_1")(y))
        y = Conv(self.out, 1, dtype=dt, name=f"conv_{j + 1}")(y)
        y = batch_norm(train, dt, name=f"conv_{j + 2}")(y)
        return y + x if self.stride == 1 and cin == self.out else y


class MobileNetV2(nn.Module):
    """x [B,H,W,3] -> dict of features (compute dtype; odd sides ceil-rounded):

    "low" features[3] 24ch /4, "c3" features[6] 32ch /8, "c4" features[13] 96ch
    /min(16, output_stride), "high" features[17] 320ch /output_stride,
    "last" features[18] 1280ch (the classifier's input).
    """

    output_stride: int = 32
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    # A standalone backbone loads the ImageNet checkpoint ("features.0.0.weight").
    torch_renames: ClassVar[tuple[tuple[str, str], ...]] = ((r"^(?=\d)", "features."),)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        _check("atrous_impl", self.atrous_impl, ATROUS_IMPLS)
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride={self.output_stride!r}; valid: 8, 16, 32")
        dt = self.dtype
        x = Conv(STEM, 3, 2, dtype=dt, name="0_0")(x.astype(dt))
        x = jax.nn.relu6(batch_norm(train, dt, name="0_1")(x))
        taps = {3: "low", 6: "c3", 13: "c4", 17: "high"}
        out, index, stride, dilation = {}, 1, 2, 1
        for t, c, n, s in SETTING:
            for i in range(n):
                block_stride, block_dilation = (s if i == 0 else 1), dilation
                if block_stride == 2 and stride * 2 > self.output_stride:
                    # Dilate instead: this block keeps the old rate, the later ones double it.
                    block_stride, dilation = 1, dilation * 2
                elif block_stride == 2:
                    stride *= 2
                x = InvertedResidual(
                    c, t, block_stride, block_dilation, self.atrous_impl, dt, name=str(index)
                )(x, train)
                if index in taps:
                    out[taps[index]] = x
                index += 1
        x = Conv(LAST, 1, dtype=dt, name="18_0")(x)
        out["last"] = jax.nn.relu6(batch_norm(train, dt, name="18_1")(x))
        return out
