"""BiSeNet V1 (Yu et al., ECCV 2018) with the ResNet-18 context path.

- spatial path: 7x7 conv 64 /2, 3x3 conv 64 /2, 3x3 conv 64 /2, 1x1 conv 128, each with
  BN + ReLU (stride 8);
- context path: ResNet-18 (torchvision layout, "context_path", so an ImageNet resnet18
  file loads), global context = average pool of layer4 + 1x1 conv 128 BN ReLU; attention
  refinement (ARM) on layer4 then layer3: 3x3 conv 128 BN ReLU, channel attention
  (global pool, 1x1 conv, BN, sigmoid: the paper's Fig. 2(b)), plus the coarser context,
  upsampled to the next stage and refined by a 3x3 conv 128 BN ReLU (stride 16, then 8);
- feature fusion (FFM): concatenation (256), 1x1 conv BN ReLU, channel attention (global
  pool, 1x1 conv, ReLU, 1x1 conv, sigmoid: Fig. 2(c)), out = f + f * attention;
- heads: 3x3 conv BN ReLU + 1x1 conv (bias), upsampled bilinearly to the input: the
  main one on the FFM (64 mid channels), two auxiliary ones (256) on the stride-16 and
  stride-8 context features, returned as aux["context16"], aux["context8"]; the paper
  weights both auxiliary losses 1.

Channel widths, the heads and the layout follow the authors' release (ycszen/TorchSeg,
model/bisenet), named after its modules (spatial_path, context_path, global_context,
arms_i, refines_i, ffm, heads_i). Two departures from it, both towards the paper: ARM's
attention has its BN (TorchSeg's has none), and upsampling uses align_corners=False.
Parameters (19 classes): 13,269,367 (13,236,087 without the auxiliary heads), pinned in
tests/test_models_bisenet.py equal to a PyTorch twin; the paper's Table 6 gives 49.0 M
for its ResNet-18 model, which no layout on ResNet-18 (11.2 M) approaches.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.layers import ConvBN, resize
from jaxseg.models.resnet import ResNet

WIDTH = 128  # conv_channel of the context and spatial paths


class AttentionRefinement(nn.Module):
    """ARM: x [B,h,w,Cin] -> [B,h,w,features]: 3x3 ConvBNReLU, then times sigmoid(BN(1x1
    conv(global average)))."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt = self.dtype
        x = ConvBN(self.features, 3, dtype=dt, name="conv_3x3")(x, train)
        a = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(dt)
        a = layers.Conv(self.features, 1, dtype=dt, name="attention_conv")(a)
        a = layers.batch_norm(train, dt, name="attention_bn")(a)
        return x * jax.nn.sigmoid(a)


class FeatureFusion(nn.Module):
    """FFM: (spatial [B,h,w,C1], context [B,h,w,C2]) -> [B,h,w,features]."""

    features: int
    reduction: int = 1  # TorchSeg's BiSeNet passes 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, spatial: jax.Array, context: jax.Array, train: bool) -> jax.Array:
        dt = self.dtype
        f = ConvBN(self.features, 1, dtype=dt, name="conv_1x1")(
            jnp.concatenate([spatial, context], axis=-1), train
        )
        a = jnp.mean(f.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(dt)
        a = nn.relu(layers.Conv(self.features // self.reduction, 1, dtype=dt, name="se_0")(a))
        a = layers.Conv(self.features, 1, dtype=dt, name="se_1")(a)
        return f + f * jax.nn.sigmoid(a)


class Head(nn.Module):
    """3x3 ConvBNReLU to `mid` + 1x1 conv (bias) to the classes: [B,h,w,C] -> [B,h,w,K]."""

    num_classes: int
    mid: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = ConvBN(self.mid, 3, dtype=self.dtype, name="conv_3x3")(x, train)
        return layers.Conv(
            self.num_classes,
            1,
            use_bias=True,
            kernel_init=layers.torch_default_init,
            dtype=self.dtype,
            name="conv_1x1",
        )(x)


class SpatialPath(nn.Module):
    """x [B,H,W,3] -> [B,H/8,W/8,features] (sides ceil-rounded)."""

    features: int = WIDTH
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt = self.dtype
        x = ConvBN(64, 7, 2, dtype=dt, name="conv_7x7")(x, train)
        x = ConvBN(64, 3, 2, dtype=dt, name="conv_3x3_1")(x, train)
        x = ConvBN(64, 3, 2, dtype=dt, name="conv_3x3_2")(x, train)
        return ConvBN(self.features, 1, dtype=dt, name="conv_1x1")(x, train)


class BiSeNetV1(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,K], aux).

    aux: {"context16", "context8"}: f32[B,H,W,K] with aux_head (default), else {}.
    """

    num_classes: int
    backbone: str = "resnet18"
    aux_head: bool = False
    dtype: Any = jnp.float32

    # Flax's "conv_3x3_1" reads as an item ".1" to the converter; TorchSeg's key keeps "_1".
    torch_renames: ClassVar[tuple[tuple[str, str], ...]] = ((r"conv_3x3\.(\d)", r"conv_3x3_\1"),)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        if self.backbone not in ("resnet18", "resnet34"):
            raise ValueError(f"backbone={self.backbone!r}; valid: resnet18, resnet34")
        size, dt = x.shape[1:3], self.dtype
        x = x.astype(dt)
        spatial = SpatialPath(dtype=dt, name="spatial_path")(x, train)
        feats = ResNet(self.backbone, 32, dtype=dt, name="context_path")(x, train)
        top = feats["layer4"]
        g = jnp.mean(top.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(dt)
        g = ConvBN(WIDTH, 1, dtype=dt, name="global_context")(g, train)
        last = g  # broadcasts over layer4's positions (TorchSeg resizes the 1x1 map)
        outs = []
        for i, (fm, below) in enumerate(
            [(top, feats["layer3"]), (feats["layer3"], feats["layer2"])]
        ):
            fm = AttentionRefinement(WIDTH, dt, name=f"arms_{i}")(fm, train) + last
            last = ConvBN(WIDTH, 3, dtype=dt, name=f"refines_{i}")(
                resize(fm, below.shape[1:3]), train
            )
            outs.append(last)
        spatial = resize(spatial, last.shape[1:3])
        fused = FeatureFusion(2 * WIDTH, dtype=dt, name="ffm")(spatial, last, train)
        logits = Head(self.num_classes, 64, dt, name="heads_2")(fused, train)
        aux = {}
        if self.aux_head:
            for i, key in enumerate(("context16", "context8")):
                a = Head(self.num_classes, 256, dt, name=f"heads_{i}")(outs[i], train)
                aux[key] = resize(a.astype(jnp.float32), size)
        return resize(logits.astype(jnp.float32), size), aux
