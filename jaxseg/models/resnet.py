"""ResNet-50/101 backbones as torchvision's ResNet v1.5 (stride on the 3x3 conv), no fc.

Submodule names mirror torchvision's (conv1, bn1, layer1_0/conv1 ... downsample_0,
downsample_1), so torchvision classification and segmentation state dicts load
through jaxseg.models.pretrained. output_stride 8/16 replaces the stride of the
last stages with dilation exactly as torchvision's replace_stride_with_dilation;
multi_grid applies the DeepLab paper's unit rates to the blocks of layer4.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers

# Bottleneck blocks per stage.
DEPTHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
OUTPUT_STRIDES = (8, 16, 32)
# Which of layer2..layer4 trade their stride for dilation (torchvision's
# replace_stride_with_dilation).
_DILATE = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}


def check_backbone(backbone: str, output_stride: int, multi_grid: tuple[int, ...]) -> None:
    """Raises ValueError naming the field for an unsupported option."""
    if backbone not in DEPTHS:
        raise ValueError(f"backbone={backbone!r}; valid: {', '.join(DEPTHS)}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride={output_stride!r}; valid: 8, 16, 32")
    blocks = DEPTHS[backbone][3]
    if multi_grid and len(multi_grid) != blocks:
        raise ValueError(
            f"multi_grid={tuple(multi_grid)!r}; valid: () or {blocks} unit rates, "
            "one per block of layer4, e.g. (1, 2, 4)"
        )


def stage_dilations(
    backbone: str, output_stride: int, multi_grid: tuple[int, ...] = ()
) -> list[tuple[int, list[int]]]:
    """Per stage (layer1..layer4): (stride of its first block, dilation of each block).

    torchvision: a dilated stage's first block keeps the previous dilation, the
    others use the new one. multi_grid (DeepLab v3, Sec. 4.2): layer4's blocks use
    rate * multi_grid[i], rate being layer4's dilation, the first block included.
    """
    check_backbone(backbone, output_stride, multi_grid)
    dilation, out = 1, []
    for i, blocks in enumerate(DEPTHS[backbone]):
        stride, previous = (1 if i == 0 else 2), dilation
        if i > 0 and _DILATE[output_stride][i - 1]:
            dilation, stride = dilation * 2, 1
        rates = [previous] + [dilation] * (blocks - 1)
        if i == 3 and multi_grid:
            rates = [dilation * m for m in multi_grid]
        out.append((stride, rates))
    return out


class Bottleneck(nn.Module):
    """torchvision Bottleneck: 1x1 -> 3x3 (stride, dilation) -> 1x1 (4x), residual.

    x [B,H,W,Cin] -> [B,H/stride,W/stride,4*planes].
    """

    planes: int
    stride: int = 1
    dilation: int = 1
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt, out = self.dtype, 4 * self.planes
        y = layers.Conv(self.planes, 1, dtype=dt, name="conv1")(x)
        y = nn.relu(layers.batch_norm(train, dt, name="bn1")(y))
        y = layers.Conv(
            self.planes,
            3,
            stride=self.stride,
            dilation=self.dilation,
            atrous_impl=self.atrous_impl,
            dtype=dt,
            name="conv2",
        )(y)
        y = nn.relu(layers.batch_norm(train, dt, name="bn2")(y))
        y = layers.Conv(out, 1, dtype=dt, name="conv3")(y)
        y = layers.batch_norm(train, dt, name="bn3")(y)
        if self.stride != 1 or x.shape[-1] != out:
            x = layers.Conv(out, 1, stride=self.stride, dtype=dt, name="downsample_0")(x)
            x = layers.batch_norm(train, dt, name="downsample_1")(x)
        return nn.relu(y + x)


class ResNet(nn.Module):
    """x f32[B,H,W,3] -> dict of features (any H, W; sides below round up):

    "stem" [B,H/2,W/2,64] (conv1 + bn1 + relu, before the max-pool),
    "layer1" [B,H/4,W/4,256], "layer2" [.., 512] at stride 8,
    "layer3" [.., 1024] at stride min(16, output_stride),
    "layer4" [.., 2048] at stride output_stride.
    Init as torchvision: He normal (fan_out) convs, BN scale 1 and bias 0.
    """

    backbone: str = "resnet50"
    output_stride: int = 32
    multi_grid: tuple[int, ...] = ()
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        layers._check("atrous_impl", self.atrous_impl, layers.ATROUS_IMPLS)
        plan = stage_dilations(self.backbone, self.output_stride, tuple(self.multi_grid))
        dt = self.dtype
        x = layers.Conv(64, 7, stride=2, dtype=dt, name="conv1")(x.astype(dt))
        x = nn.relu(layers.batch_norm(train, dt, name="bn1")(x))
        features = {"stem": x}
        # nn.max_pool pads with -inf, as torch's MaxPool2d(3, 2, padding=1).
        x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, (stride, rates) in enumerate(plan):
            for j, rate in enumerate(rates):
                x = Bottleneck(
                    64 * 2**i,
                    stride if j == 0 else 1,
                    rate,
                    self.atrous_impl,
                    dt,
                    name=f"layer{i + 1}_{j}",
                )(x, train)
            features[f"layer{i + 1}"] = x
        return features
