"""BiSeNet V1 (Yu et al., ECCV 2018) with a ResNet-18 (default) or Xception39 context path.

- spatial path: 7x7 conv 64 /2, 3x3 conv 64 /2, 3x3 conv 64 /2, 1x1 conv 128, each with
  BN + ReLU (stride 8);
- context path ("context_path"): ResNet-18/34 (torchvision layout) or Xception39 (the
  release's layout, jaxseg.models.xception39), its features at strides 8, 16 and 32
  (ResNet's layer2..layer4, Xception39's layer1..layer3); global context = average pool
  of the stride-32 features + 1x1 conv 128 BN ReLU; attention refinement (ARM) on the
  stride-32 then the stride-16 features: 3x3 conv 128 BN ReLU, channel attention (global
  pool, 1x1 conv, BN, sigmoid: the paper's Fig. 2(b)), plus the coarser context, upsampled
  to the next stage and refined by a 3x3 conv 128 BN ReLU (stride 16, then 8);
- feature fusion (FFM): concatenation (256), 1x1 conv BN ReLU, channel attention (global
  pool, 1x1 conv, ReLU, 1x1 conv, sigmoid: Fig. 2(c)), out = f + f * attention;
- heads: 3x3 conv BN ReLU + 1x1 conv (bias), upsampled bilinearly to the input: the
  main one on the FFM (64 mid channels), two auxiliary ones (256 mid channels after
  ResNet, 128 after Xception39, as the release's R18 and X39 networks) on the stride-16
  and stride-8 context features, returned as aux["context16"], aux["context8"]; the paper
  weights both auxiliary losses 1.

Channel widths, the heads and the layout follow the authors' release (ycszen/TorchSeg,
model/bisenet/cityscapes.bisenet.R18 and .X39), named after its modules (spatial_path,
context_path, global_context, arms_i, refines_i, ffm, heads_i). ARM's attention conv has
its BN, as the release's furnace/seg_opr/seg_oprs.py and the paper's Fig. 2(b); the one
departure from the release is upsampling with align_corners=False.

Parameters (19 classes), pinned in tests/test_models_bisenet.py equal to PyTorch twins:
ResNet-18 13,494,777 (12,894,163 without the auxiliary heads), Xception39 1,842,289
(1,541,963). The paper's Table 6 gives 49.0 M and 5.8 M for these two models (quoted, not
re-read here); no layout of the release approaches either (ResNet-18 alone has 11.2 M,
Xception39 0.3 M).
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.layers import ConvBN, resize
from jaxseg.models.resnet import ResNet
from jaxseg.models.table import register
from jaxseg.models.xception39 import Xception39

WIDTH = 128  # conv_channel of the context and spatial paths
# Per context path: its feature keys at strides 8, 16, 32, and the auxiliary heads' mid
# width (the release's R18 network: 256, X39: 128).
BACKBONES = {
    "resnet18": (("layer2", "layer3", "layer4"), 256),
    "resnet34": (("layer2", "layer3", "layer4"), 256),
    "xception39": (("layer1", "layer2", "layer3"), 128),
}


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


@register("bisenetv1")
class BiSeNetV1(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,K], aux).

    aux: {"context16", "context8"}: f32[B,H,W,K] with aux_head, else {}.
    backbone: resnet18 (default), resnet34 or xception39 (the paper's light context path).
    """

    num_classes: int
    backbone: str = "resnet18"
    aux_head: bool = False
    dtype: Any = jnp.float32

    # Flax's "conv_3x3_1" reads as an item ".1" to the converter; TorchSeg's key keeps "_1".
    torch_renames: ClassVar[tuple[tuple[str, str], ...]] = ((r"conv_3x3\.(\d)", r"conv_3x3_\1"),)

    @staticmethod
    def adapt_state_dict(state: dict) -> dict:
        """An ImageNet backbone file (torchvision's resnet18 "layer1.0.conv1.weight", the
        release's xception39 "layer1.0.proj.conv1.weight") loads into the context path;
        pretrained.convert_state_dict only finds such keys under a "backbone." prefix."""
        if any(k.startswith(("context_path.", "spatial_path.")) for k in state):
            return state
        return {f"context_path.{k}": v for k, v in state.items()}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone={self.backbone!r}; valid: {', '.join(BACKBONES)}")
        size, dt = x.shape[1:3], self.dtype
        x = x.astype(dt)
        spatial = SpatialPath(dtype=dt, name="spatial_path")(x, train)
        if self.backbone == "xception39":
            feats = Xception39(dt, name="context_path")(x, train)
        else:
            feats = ResNet(self.backbone, 32, dtype=dt, name="context_path")(x, train)
        taps, aux_mid = BACKBONES[self.backbone]
        s8, s16, s32 = (feats[k] for k in taps)
        g = jnp.mean(s32.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(dt)
        g = ConvBN(WIDTH, 1, dtype=dt, name="global_context")(g, train)
        last = g  # broadcasts over the stride-32 positions (TorchSeg resizes the 1x1 map)
        outs = []
        for i, (fm, below) in enumerate([(s32, s16), (s16, s8)]):
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
                a = Head(self.num_classes, aux_mid, dt, name=f"heads_{i}")(outs[i], train)
                aux[key] = resize(a.astype(jnp.float32), size)
        return resize(logits.astype(jnp.float32), size), aux
