"""DeepLab before V3: v1 LargeFOV (Chen et al., ICLR 2015) and v2 (Chen et al., TPAMI 2017).

DeepLab-LargeFOV, as the authors' prototxt: DeepLab's VGG16 (vgg.VGG16(deeplab=True):
3x3 pools, pool4/pool5 at stride 1, conv5 dilated 2, output stride 8), the prototxt's
"pool5a" (3x3 average pooling, stride 1, padding 1, padded zeros counted: Caffe divides by 9
everywhere), fc6 as a 3x3 conv with dilation 12 to 1024 channels, ReLU, dropout 0.5, fc7 1x1
to 1024, ReLU, dropout 0.5, fc8 1x1 to the classes; every conv has a bias. 20,505,429
parameters for 21 classes (the paper's Table 2: 20.5 M). The ImageNet torchvision vgg16
file fills the 13 convs ("backbone.features.N"); the authors' fc6/fc7 are subsampled from
VGG's fully connected layers, which this converter does not do: fc6-fc8 start new.

DeepLab v2, ResNet variant: a torchvision ResNet-101 (or 50) dilated to output stride 8,
and ASPP-v2 on layer4: four 3x3 convs straight to the classes with dilations 6, 12, 18,
24, summed (no BN, no image pooling, no projection: that is V3's ASPP). Names follow the
common PyTorch port (kazuto1011/deeplab-pytorch: aspp.c0 .. aspp.c3); its classifier
init is N(0, 0.01), zero bias. The paper's multi-scale input training (max over 1, 0.75,
0.5) and the dense CRF are separate steps, not part of the network. Logits from both
are upsampled bilinearly to the input (the authors' interp layer).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.resnet import ResNet
from jaxseg.models.table import register
from jaxseg.models.vgg import VGG16

ASPP_V2_RATES = (6, 12, 18, 24)
# The authors' prototxt: fc8 / ASPP classifiers drawn from N(0, 0.01).
normal_001 = nn.initializers.normal(0.01)


@register("deeplab_largefov")
class DeepLabLargeFOV(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], aux {})."""

    num_classes: int
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        size, dt = x.shape[1:3], self.dtype
        y = VGG16(deeplab=True, dtype=dt, name="backbone")(x, train)["pool5"]
        y = nn.avg_pool(y, (3, 3), padding=((1, 1), (1, 1)), count_include_pad=True)
        y = layers.Conv(
            1024, 3, dilation=12, use_bias=True, atrous_impl=self.atrous_impl, dtype=dt, name="fc6"
        )(y)
        y = nn.Dropout(0.5, deterministic=not train)(nn.relu(y))
        y = layers.Conv(1024, 1, use_bias=True, dtype=dt, name="fc7")(y)
        y = nn.Dropout(0.5, deterministic=not train)(nn.relu(y))
        y = layers.Conv(
            self.num_classes, 1, use_bias=True, kernel_init=normal_001, dtype=dt, name="fc8"
        )(y)
        return layers.resize(y.astype(jnp.float32), size), {}


class ASPPv2(nn.Module):
    """x [B,h,w,C] -> [B,h,w,num_classes]: the sum of one 3x3 conv (bias) per rate."""

    num_classes: int
    rates: tuple[int, ...] = ASPP_V2_RATES
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return sum(
            layers.Conv(
                self.num_classes,
                3,
                dilation=rate,
                use_bias=True,
                atrous_impl=self.atrous_impl,
                kernel_init=normal_001,
                dtype=self.dtype,
                name=f"c{i}",
            )(x)
            for i, rate in enumerate(self.rates)
        )


@register("deeplabv2")
class DeepLabV2(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], aux {})."""

    num_classes: int
    backbone: str = "resnet101"
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        size, dt = x.shape[1:3], self.dtype
        feats = ResNet(self.backbone, 8, atrous_impl=self.atrous_impl, dtype=dt, name="backbone")(
            x, train
        )
        y = ASPPv2(self.num_classes, atrous_impl=self.atrous_impl, dtype=dt, name="aspp")(
            feats["layer4"]
        )
        return layers.resize(y.astype(jnp.float32), size), {}
