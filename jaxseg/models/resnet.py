"""ResNet-18/34/50/101 backbones as torchvision's ResNet (v1.5: stride on the 3x3 conv), no fc.

Submodule names mirror torchvision's (conv1, bn1, layer1_0/conv1 ... downsample_0,
downsample_1), so torchvision classification and segmentation state dicts load
through jaxseg.models.pretrained. output_stride 8/16 replaces the stride of the
last stages with dilation exactly as torchvision's replace_stride_with_dilation;
multi_grid applies the DeepLab paper's unit rates to the blocks of layer4.

ResNet-18/34 use torchvision's BasicBlock (two 3x3 convs, expansion 1), which torchvision
itself refuses to dilate. Dilated here, a block's first conv takes the rate the stage
schedule gives it (the previous stage's rate in a stage's first block, as its strided
conv) and its second conv the stage's own rate: the second conv sits after the stride
that dilation replaces, so this is the exact atrous rewrite of the strided network (mmseg
leaves the second conv undilated, which is not).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers

# Blocks per stage (BasicBlock for 18/34, Bottleneck for 50/101).
DEPTHS = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
}
BASIC = ("resnet18", "resnet34")


def widths(backbone: str) -> tuple[int, int, int, int]:
    """Output channels of layer1..layer4: (64, 128, 256, 512) or (256, 512, 1024, 2048)."""
    expansion = 1 if backbone in BASIC else 4
    return tuple(64 * 2**i * expansion for i in range(4))


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


class BasicBlock(nn.Module):
    """torchvision BasicBlock: 3x3 (stride, dilation) -> 3x3 (dilation2), residual.

    x [B,H,W,Cin] -> [B,H/stride,W/stride,planes].
    """

    planes: int
    stride: int = 1
    dilation: int = 1
    dilation2: int = 1
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt, p = self.dtype, self.planes
        y = layers.Conv(
            p, 3, self.stride, self.dilation, atrous_impl=self.atrous_impl, dtype=dt, name="conv1"
        )(x)
        y = nn.relu(layers.batch_norm(train, dt, name="bn1")(y))
        y = layers.Conv(
            p, 3, 1, self.dilation2, atrous_impl=self.atrous_impl, dtype=dt, name="conv2"
        )(y)
        y = layers.batch_norm(train, dt, name="bn2")(y)
        if self.stride != 1 or x.shape[-1] != p:
            x = layers.Conv(p, 1, stride=self.stride, dtype=dt, name="downsample_0")(x)
            x = layers.batch_norm(train, dt, name="downsample_1")(x)
        return nn.relu(y + x)


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
    "layer4" [.., 2048] at stride output_stride
    (channels for ResNet-50/101; ResNet-18/34: 64, 128, 256, 512, see `widths`).
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
        basic = self.backbone in BASIC
        for i, (stride, rates) in enumerate(plan):
            for j, rate in enumerate(rates):
                name, s = f"layer{i + 1}_{j}", stride if j == 0 else 1
                if basic:
                    # The second conv follows the (replaced) stride: the stage's own rate,
                    # which is rates[1] for a first block and the block's rate otherwise.
                    after = rates[1] if j == 0 and not (i == 3 and self.multi_grid) else rate
                    block = BasicBlock(64 * 2**i, s, rate, after, self.atrous_impl, dt, name=name)
                else:
                    block = Bottleneck(64 * 2**i, s, rate, self.atrous_impl, dt, name=name)
                x = block(x, train)
            features[f"layer{i + 1}"] = x
        return features
