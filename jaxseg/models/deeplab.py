"""DeepLabV3 (Chen et al., 2017) as torchvision's deeplabv3_*, and DeepLabV3+ (Chen et al., 2018).

DeepLabV3: dilated backbone -> DeepLabHead (ASPP "0", 3x3 conv 256 "1", BN "2",
ReLU, 1x1 conv "4") -> bilinear upsampling to the input size; optional FCNHead
"aux_classifier" on layer3. Names are torchvision's, so its state dicts load.
ASPP rates are (6, 12, 18) at output stride 16, scaled with it: (12, 24, 36) at 8
(torchvision's), (3, 6, 9) at 32.

DeepLabV3+: ASPP on layer4 (rates as above), a 1x1 conv + BN + ReLU projection of
layer1 to 48 channels, concatenation with the ASPP output resized to layer1's size
(4x at output stride 16, up to rounding on odd sides), two 3x3 conv 256 + BN + ReLU,
a 1x1 classifier, bilinear upsampling to the input size. No dropout in the decoder
(the paper mentions none; ASPP keeps torchvision's 0.5). separable=True makes the
3x3 convs of ASPP and decoder depthwise-separable as segmentation_models_pytorch's
SeparableConv2d (and layers.ASPP): depthwise 3x3 + pointwise 1x1, no BN between,
then BN + ReLU. (TF DeepLab puts BN + ReLU after the depthwise conv too; that
variant has 2*Cin more parameters per conv and is not implemented.)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.resnet import ResNet
from jaxseg.models.table import register

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large")


def aspp_rates(output_stride: int, base: tuple[int, ...] = (6, 12, 18)) -> tuple[int, ...]:
    """ASPP rates for `base` rates at output stride 16: (6, 12, 18) -> (12, 24, 36) at 8."""
    return tuple(r * 16 // output_stride for r in base)


class DeepLabHead(nn.Module):
    """torchvision's DeepLabHead: x [B,h,w,Cin] -> [B,h,w,num_classes]."""

    num_classes: int
    rates: tuple[int, ...]
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt = self.dtype
        x = layers.ASPP(self.rates, atrous_impl=self.atrous_impl, dtype=dt, name="0")(x, train)
        x = layers.Conv(256, 3, dtype=dt, name="1")(x)
        x = nn.relu(layers.batch_norm(train, dt, name="2")(x))
        return layers.Conv(
            self.num_classes,
            1,
            use_bias=True,
            kernel_init=layers.torch_default_init,
            dtype=dt,
            name="4",
        )(x)


def _aux(module: nn.Module, feature: jax.Array, size, train: bool) -> dict:
    """{"aux": FCNHead logits f32[B,H,W,K] at input size} when module.aux_head, else {}."""
    if not module.aux_head:
        return {}
    y = layers.FCNHead(module.num_classes, module.dtype, name="aux_classifier")(feature, train)
    return {"aux": layers.resize(y.astype(jnp.float32), size)}


@register("deeplabv3")
class DeepLabV3(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], aux).

    aux is {"aux": f32[B,H,W,num_classes]} with aux_head, else {}.
    backbone="mobilenet_v3_large" is torchvision's deeplabv3_mobilenet_v3_large:
    MobileNetV3-Large features, dilated at output_stride 16 (32: undilated), the head
    on its 960-channel output with torchvision's rates (12, 24, 36) at 16, the aux
    head on the 40-channel stride-8 features; multi_grid must be ().
    """

    num_classes: int
    backbone: str = "resnet50"
    output_stride: int = 8
    multi_grid: tuple[int, ...] = ()
    aux_head: bool = False
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        size = x.shape[1:3]
        if self.backbone == "mobilenet_v3_large":
            if self.output_stride not in (16, 32):
                raise ValueError(
                    f"output_stride={self.output_stride!r}; valid with mobilenet_v3_large: 16, 32"
                )
            if self.multi_grid:
                raise ValueError("multi_grid must be () with backbone='mobilenet_v3_large'")
            # Imported here so the ResNet models do not depend on the MobileNet module.
            from jaxseg.models.mobilenetv3 import MobileNetV3Large

            feats = MobileNetV3Large(
                dilated=self.output_stride == 16,
                atrous_impl=self.atrous_impl,
                dtype=self.dtype,
                name="backbone",
            )(x, train)
            high, low = feats["high"], feats["low"]
            rates = aspp_rates(self.output_stride, (12, 24, 36))
        elif self.backbone in BACKBONES:
            feats = ResNet(
                self.backbone,
                self.output_stride,
                tuple(self.multi_grid),
                self.atrous_impl,
                self.dtype,
                name="backbone",
            )(x, train)
            high, low = feats["layer4"], feats["layer3"]
            rates = aspp_rates(self.output_stride)
        else:
            raise ValueError(f"backbone={self.backbone!r}; valid: {', '.join(BACKBONES)}")
        logits = DeepLabHead(
            self.num_classes, rates, self.atrous_impl, self.dtype, name="classifier"
        )(high, train)
        return layers.resize(logits.astype(jnp.float32), size), _aux(self, low, size, train)


class SeparableConv(nn.Module):
    """3x3 depthwise (dilation 1) + 1x1 pointwise conv, no bias: [B,H,W,Cin] -> [..,features]."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        x = layers.Conv(c, 3, groups=c, dtype=self.dtype, name="depthwise")(x)
        return layers.Conv(self.features, 1, dtype=self.dtype, name="pointwise")(x)


@register("deeplabv3plus")
class DeepLabV3Plus(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], aux).

    Names: "backbone", "aspp", "low_level_0/1" (projection conv, BN),
    "decoder_0/1", "decoder_3/4" (conv, BN; separable: decoder_0_depthwise ...),
    "classifier", "aux_classifier" (FCNHead on layer3, aux["aux"], with aux_head).
    """

    num_classes: int
    backbone: str = "resnet50"
    output_stride: int = 16
    multi_grid: tuple[int, ...] = ()
    separable: bool = False
    aux_head: bool = False
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        size, dt = x.shape[1:3], self.dtype
        feats = ResNet(
            self.backbone,
            self.output_stride,
            tuple(self.multi_grid),
            self.atrous_impl,
            dt,
            name="backbone",
        )(x, train)
        y = layers.ASPP(
            aspp_rates(self.output_stride),
            separable=self.separable,
            atrous_impl=self.atrous_impl,
            dtype=dt,
            name="aspp",
        )(feats["layer4"], train)
        low = feats["layer1"]
        low = layers.Conv(48, 1, dtype=dt, name="low_level_0")(low)
        low = nn.relu(layers.batch_norm(train, dt, name="low_level_1")(low))
        # layer1 is ceil(H/4); the ASPP output ceil-rounds again, so resize to match exactly.
        y = jnp.concatenate([layers.resize(y, low.shape[1:3]), low], axis=-1)
        for i in (0, 3):
            if self.separable:
                y = SeparableConv(256, dt, name=f"decoder_{i}")(y)
            else:
                y = layers.Conv(256, 3, dtype=dt, name=f"decoder_{i}")(y)
            y = nn.relu(layers.batch_norm(train, dt, name=f"decoder_{i + 1}")(y))
        logits = layers.Conv(
            self.num_classes,
            1,
            use_bias=True,
            kernel_init=layers.torch_default_init,
            dtype=dt,
            name="classifier",
        )(y)
        return layers.resize(logits.astype(jnp.float32), size), _aux(
            self, feats["layer3"], size, train
        )
