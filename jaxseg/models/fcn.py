"""FCN with a dilated ResNet backbone, as torchvision's fcn_resnet50/101.

The backbone runs at output stride 8 (layer3 and layer4 dilated); FCNHead on
layer4 gives the logits, an optional second FCNHead on layer3 the auxiliary
logits; both are upsampled bilinearly to the input size. Top-level names
"backbone", "classifier", "aux_classifier" are torchvision's, so its
segmentation state dicts load directly (and ImageNet ResNet ones into the backbone).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.resnet import ResNet
from jaxseg.models.table import register


@register("fcn")
class FCN(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], aux).

    aux is {"aux": f32[B,H,W,num_classes]} with aux_head, else {}.
    """

    num_classes: int
    backbone: str = "resnet50"
    aux_head: bool = False
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        size = x.shape[1:3]
        feats = ResNet(
            self.backbone, 8, atrous_impl=self.atrous_impl, dtype=self.dtype, name="backbone"
        )(x, train)
        logits = layers.FCNHead(self.num_classes, self.dtype, name="classifier")(
            feats["layer4"], train
        )
        aux = {}
        if self.aux_head:
            y = layers.FCNHead(self.num_classes, self.dtype, name="aux_classifier")(
                feats["layer3"], train
            )
            aux["aux"] = layers.resize(y.astype(jnp.float32), size)
        return layers.resize(logits.astype(jnp.float32), size), aux
