"""Lite R-ASPP (Howard et al., 2019) on a dilated MobileNetV3-Large, as torchvision's
lraspp_mobilenet_v3_large.

The head gates a 1x1 conv + BN + ReLU of the stride-16 features ("high", 960 channels)
by a sigmoid of a 1x1 conv of their global average, resizes the result to the stride-8
features ("low", 40 channels), and sums a 1x1 classifier of each. Submodule names are
torchvision's ("backbone.*", "classifier.cbr.0", ...), so its checkpoints load as they
are; 3,221,538 parameters for 21 classes, as torchvision's model card.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.layers import Conv, batch_norm, resize, torch_default_init
from jaxseg.models.mobilenetv3 import MobileNetV3Large, imagenet_to_backbone
from jaxseg.models.table import register


class LRASPPHead(nn.Module):
    """{"low": [B,h,w,Cl], "high": [B,h',w',Ch]} -> logits [B,h,w,num_classes]."""

    num_classes: int
    inter_channels: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: dict[str, jax.Array], train: bool) -> jax.Array:
        low, high, dt = features["low"], features["high"], self.dtype
        conv = lambda f, name, bias=False: Conv(  # noqa: E731
            f, 1, use_bias=bias, dtype=dt, kernel_init=torch_default_init, name=name
        )
        x = nn.relu(batch_norm(train, dt, name="cbr_1")(conv(self.inter_channels, "cbr_0")(high)))
        pooled = jnp.mean(high.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(dt)
        x = x * nn.sigmoid(conv(self.inter_channels, "scale_1")(pooled))
        x = resize(x, low.shape[1:3])
        return conv(self.num_classes, "low_classifier", True)(low) + conv(
            self.num_classes, "high_classifier", True
        )(x)


@register("lraspp")
class LRASPP(nn.Module):
    """x: f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], aux {}).

    Logits are computed at stride 8 and resized bilinearly (align_corners=False) to
    the input, as torchvision does.
    """

    num_classes: int = 21
    atrous_impl: str = "plain"  # plain | space_to_batch: the backbone's dilated convs
    dtype: Any = jnp.float32

    @staticmethod
    def adapt_state_dict(state: dict) -> dict:
        """An ImageNet mobilenet_v3_large file ("features.N...") loads into the backbone."""
        if any(k.startswith("backbone.") for k in state):
            return state
        return imagenet_to_backbone(state)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        features = MobileNetV3Large(
            dilated=True, atrous_impl=self.atrous_impl, dtype=self.dtype, name="backbone"
        )(x, train)
        logits = LRASPPHead(self.num_classes, dtype=self.dtype, name="classifier")(features, train)
        return resize(logits, x.shape[1:3]).astype(jnp.float32), {}
