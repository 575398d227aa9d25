"""PSPNet (Zhao et al., 2017) on a torchvision-style dilated ResNet at output stride 8.

Pyramid pooling on layer4 (C = 2048 channels): per bin b in (1, 2, 3, 6), adaptive
average pooling to b x b, 1x1 conv to C/4 = 512 (no bias) + BN + ReLU, bilinear
upsampling back; concatenation with layer4 (2C = 4096 channels) -> 3x3 conv C/4 = 512
+ BN + ReLU -> dropout 0.1 -> 1x1 classifier -> bilinear upsampling to the input.
The paper reduces each level to 1/N of C for N = 4 levels; on ResNet-18/34 (C = 512)
the same rule gives 128, mmseg's width for its PSPNet R18.
The auxiliary FCN head on layer3 (aux_head) gives aux["aux"].

Names follow hszhao/semseg's PSPNet ("ppm.features.N.1/.2", "cls.0/.1/.4",
"aux.0/.1/.4"); the backbone is torchvision's ResNet (7x7 stem, its dilation
scheme), not semseg's deep-stem ResNet, so semseg checkpoints load only the heads.
Upsampling uses align_corners=False (semseg uses True).

Parameters (21 classes, aux head): ResNet-50 23,508,032 + pyramid 4 x (2048*512 + 1,024)
= 4,198,400 + bottleneck 9*4096*512 + 1,024 = 18,875,392 + classifier 512*21 + 21
= 10,773 + aux head 9*1024*256 + 512 + 256*21 + 21 = 2,365,205: 48,957,802
(ResNet-101: + 18,992,128 = 67,949,930).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.resnet import ResNet
from jaxseg.models.table import register

BINS = (1, 2, 3, 6)


class PyramidPooling(nn.Module):
    """x [B,h,w,C] -> [B,h,w,C + len(bins)*features] (x first, then bins in order)."""

    bins: tuple[int, ...] = BINS
    features: int = 512
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out = [x]
        for i, b in enumerate(self.bins):
            y = layers.adaptive_avg_pool(x, b)
            y = layers.Conv(self.features, 1, dtype=self.dtype, name=f"features_{i}_1")(y)
            y = nn.relu(layers.batch_norm(train, self.dtype, name=f"features_{i}_2")(y))
            out.append(layers.resize(y, x.shape[1:3]))
        return jnp.concatenate(out, axis=-1)


@register("pspnet")
class PSPNet(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], aux).

    aux is {"aux": f32[B,H,W,num_classes]} with aux_head (default), else {}.
    """

    num_classes: int
    backbone: str = "resnet50"
    aux_head: bool = False
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        size, dt = x.shape[1:3], self.dtype
        feats = ResNet(self.backbone, 8, atrous_impl=self.atrous_impl, dtype=dt, name="backbone")(
            x, train
        )
        width = feats["layer4"].shape[-1] // len(BINS)
        y = PyramidPooling(features=width, dtype=dt, name="ppm")(feats["layer4"], train)
        y = layers.Conv(width, 3, dtype=dt, name="cls_0")(y)
        y = nn.relu(layers.batch_norm(train, dt, name="cls_1")(y))
        y = nn.Dropout(0.1, deterministic=not train)(y)
        logits = layers.Conv(
            self.num_classes,
            1,
            use_bias=True,
            kernel_init=layers.torch_default_init,
            dtype=dt,
            name="cls_4",
        )(y)
        aux = {}
        if self.aux_head:
            a = layers.FCNHead(self.num_classes, dt, name="aux")(feats["layer3"], train)
            aux["aux"] = layers.resize(a.astype(jnp.float32), size)
        return layers.resize(logits.astype(jnp.float32), size), aux
