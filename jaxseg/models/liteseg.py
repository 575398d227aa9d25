"""LiteSeg (Emara et al., DICTA 2019) with the MobileNetV2 backbone, as the authors' release
(tahaemara/LiteSeg, models/liteseg_mobilenet.py and models/aspp.py).

- backbone: MobileNetV2's whole `features` (1280 channels at stride 32, undilated) and
  its features[3] (24 channels, stride 4) as the low-level map; named "backbone", so
  torchvision's ImageNet mobilenet_v2 file loads with --config.model.pretrained;
- DASPP ("deeper" ASPP) on the 1280 channels, every conv depthwise-separable (a k x k
  depthwise conv straight into a 1x1 pointwise conv, no bias, no BN between): a 1x1
  branch + BN; branches at dilations 3, 6, 9: separable 3x3 + BN, then a further
  separable 3x3 + BN + ReLU; image pooling: 1x1 conv + BN + ReLU, broadcast back;
- long residual: the backbone output concatenated with the five branches (1760
  channels), separable 1x1 to 96 + BN + ReLU, bilinearly upsampled to ceil(H/4);
- short residual: concatenation with the low-level map (120 channels), two separable
  3x3 to 96 + BN + ReLU, a 1x1 classifier (bias), bilinear upsampling to the input.

The branch outputs keep the release's activations (no ReLU after the 1x1 and the first
atrous BN). Upsampling uses align_corners=False (the release: True).

Parameters (19 classes): 3,101,707. The paper's Table 3 gives 4.38 M for LiteSeg-MobileNet:
that is the release's module, which keeps MobileNetV2's unused ImageNet classifier
(1280 x 1000 + 1000 = 1,281,000): 4,382,707 (tests/test_models_liteseg.py pins both).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.layers import ATROUS_IMPLS, Conv, _check, batch_norm, resize
from jaxseg.models.mobilenetv2 import MobileNetV2
from jaxseg.models.mobilenetv3 import imagenet_to_backbone
from jaxseg.models.table import register

RATES = (3, 6, 9)
WIDTH = 96


class SeparableConv2d(nn.Module):
    """k x k depthwise conv (dilation) + 1x1 pointwise, no bias: [B,H,W,C] -> [B,H,W,features].
    Names "conv1" (depthwise) and "pointwise", as the release."""

    features: int
    kernel_size: int = 1
    dilation: int = 1
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        x = Conv(
            c,
            self.kernel_size,
            dilation=self.dilation,
            groups=c,
            atrous_impl=self.atrous_impl,
            dtype=self.dtype,
            name="conv1",
        )(x)
        return Conv(self.features, 1, dtype=self.dtype, name="pointwise")(x)


class DASPPBranch(nn.Module):
    """The release's aspp.ASPP: rate 1 a separable 1x1 + BN; otherwise separable 3x3 at the
    rate + BN, then separable 3x3 + BN + ReLU. [B,h,w,C] -> [B,h,w,features]."""

    features: int
    rate: int
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt, f = self.dtype, self.features
        k = 1 if self.rate == 1 else 3
        x = SeparableConv2d(f, k, self.rate, self.atrous_impl, dt, name="atrous_convolution")(x)
        x = batch_norm(train, dt, name="bn")(x)
        if self.rate == 1:
            return x
        x = SeparableConv2d(f, 3, dtype=dt, name="conv1")(x)
        return nn.relu(batch_norm(train, dt, name="bn1")(x))


@register("liteseg")
class LiteSeg(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], aux {})."""

    num_classes: int
    atrous_impl: str = "plain"  # plain | space_to_batch: the DASPP's dilated depthwise convs
    dtype: Any = jnp.float32

    @staticmethod
    def adapt_state_dict(state: dict) -> dict:
        """torchvision's ImageNet mobilenet_v2 file ("features.N...") fills the backbone."""
        if any(k.startswith("features.") for k in state):
            return imagenet_to_backbone(state)
        return state

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        _check("atrous_impl", self.atrous_impl, ATROUS_IMPLS)
        size, dt = x.shape[1:3], self.dtype
        feats = MobileNetV2(dtype=dt, name="backbone")(x, train)
        top, low = feats["last"], feats["low"]
        branches = [top]
        for i, rate in enumerate((1, *RATES), start=1):
            branches.append(
                DASPPBranch(WIDTH, rate, self.atrous_impl, dt, name=f"aspp{i}")(top, train)
            )
        g = jnp.mean(top.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(dt)
        g = Conv(WIDTH, 1, dtype=dt, name="global_avg_pool_1")(g)
        g = nn.relu(batch_norm(train, dt, name="global_avg_pool_2")(g))
        branches.append(jnp.broadcast_to(g, (*top.shape[:3], WIDTH)))
        y = SeparableConv2d(WIDTH, 1, dtype=dt, name="conv1")(jnp.concatenate(branches, -1))
        y = nn.relu(batch_norm(train, dt, name="bn1")(y))
        y = jnp.concatenate([resize(y, low.shape[1:3]), low], -1)
        for i in (0, 3):
            y = SeparableConv2d(WIDTH, 3, dtype=dt, name=f"last_conv_{i}")(y)
            y = nn.relu(batch_norm(train, dt, name=f"last_conv_{i + 1}")(y))
        y = Conv(
            self.num_classes,
            1,
            use_bias=True,
            kernel_init=layers.torch_default_init,
            dtype=dt,
            name="last_conv_6",
        )(y)
        return resize(y.astype(jnp.float32), size), {}
