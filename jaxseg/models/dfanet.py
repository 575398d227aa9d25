"""DFANet (Li et al., CVPR 2019): three light Xception backbones chained by sub-network and
sub-stage aggregation, with an fc attention head per backbone, after the widely used
PyTorch implementation (Tramac/awesome-semantic-segmentation-pytorch, models/dfanet.py and
base_models/xception.py), whose module names these follow.

- backbone A (B): 3x3 conv 8 /2 + BN + ReLU; enc2, enc3, enc4 of 4, 6, 4 blocks with 48,
  96, 192 (B: 32, 64, 128) channels, each stage's first block /2. A block: three
  (ReLU, separable 3x3 with BN between depthwise and pointwise, BN) to out/4, out/4, out
  (the last one carrying the stride), plus the input (a 1x1 conv /stride + BN when the
  shape changes);
- fc attention: global pool, fc to 1000, 1x1 conv back + BN + ReLU, times the input;
- sub-network aggregation: backbone k+1 starts from backbone k's attention output
  upsampled to its enc2 size, concatenated with that enc2; sub-stage aggregation: each
  later stage also takes the previous backbone's same stage, concatenated;
- decoder: the three enc2 outputs reduced to 32 channels (1x1 ConvBNReLU), summed at
  stride 4, a 1x1 ConvBNReLU; plus the three attention outputs reduced to 32 and
  upsampled; a 1x1 classifier (bias), upsampled to the input.

Every upsampling resizes to the target map's size, so any H, W works, with
align_corners=False (the reference: True, by fixed factors). Parameters (19 classes):
A 1,831,051, B 1,099,883, equal to a PyTorch twin of the reference's layout; the paper
gives 7.8 M / 4.8 M, which the layout of its Table 1 does not reach (see the test).
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.layers import Conv, ConvBN, batch_norm, resize
from jaxseg.models.table import register

# variant -> (widths of enc2, enc3, enc4), blocks per stage
VARIANTS = {"A": ((48, 96, 192), (4, 6, 4)), "B": ((32, 64, 128), (4, 6, 4))}
DECODER = 32


class SeparableConv(nn.Module):
    """3x3 depthwise /stride + BN + 1x1 pointwise (no bias): names conv1, bn, pointwise."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        x = Conv(c, 3, self.stride, groups=c, dtype=self.dtype, name="conv1")(x)
        x = batch_norm(train, self.dtype, name="bn")(x)
        return Conv(self.features, 1, dtype=self.dtype, name="pointwise")(x)


class BlockA(nn.Module):
    """x [B,H,W,Cin] -> [B,H/stride,W/stride,out]; rep_1/rep_2, rep_4/rep_5, rep_7/rep_8 are
    the reference's Sequential indices (ReLUs at 0, 3, 6)."""

    out: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt, mid = self.dtype, self.out // 4
        y = x
        for i, (width, stride) in enumerate(((mid, 1), (mid, 1), (self.out, self.stride))):
            y = SeparableConv(width, stride, dt, name=f"rep_{3 * i + 1}")(nn.relu(y), train)
            y = batch_norm(train, dt, name=f"rep_{3 * i + 2}")(y)
        if self.stride != 1 or x.shape[-1] != self.out:
            x = Conv(self.out, 1, self.stride, dtype=dt, name="skip")(x)
            x = batch_norm(train, dt, name="skipbn")(x)
        return y + x


class Enc(nn.Module):
    """A stage: BlockA /2 then blocks - 1 BlockA; names block_i."""

    out: int
    blocks: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i in range(self.blocks):
            x = BlockA(self.out, 2 if i == 0 else 1, self.dtype, name=f"block_{i}")(x, train)
        return x


class FCAttention(nn.Module):
    """x [B,h,w,C] -> x * relu(BN(conv1x1(fc(mean x)))): names fc, conv_0, conv_1."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt, c = self.dtype, x.shape[-1]
        a = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(dt)
        a = nn.Dense(1000, dtype=dt, name="fc")(a)
        a = Conv(c, 1, dtype=dt, name="conv_0")(a)
        return x * nn.relu(batch_norm(train, dt, name="conv_1")(a))


@register("dfanet")
class DFANet(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], aux {})."""

    num_classes: int
    variant: str = "A"  # "A" | "B"
    dtype: Any = jnp.float32

    # The reference's keys: "enc2_2", "fca_1_reduce" (Flax's "_2" would read as an index),
    # the first backbone under "pretrained." with its stem as an nn.Sequential.
    torch_renames: ClassVar[tuple[tuple[str, str], ...]] = (
        (r"^(enc\d|fca)\.(\d)", r"\1_\2"),
        (r"^pretrained_conv1\.conv\.", "pretrained.conv1.0."),
        (r"^pretrained_conv1\.bn\.", "pretrained.conv1.1."),
        (r"^pretrained_", "pretrained."),
    )

    @staticmethod
    def adapt_state_dict(state: dict) -> dict:
        """The reference's first backbone (XceptionA) keeps its ImageNet classifier
        ("pretrained.fc."), which DFANet never applies: dropped, not reported unused."""
        return {k: v for k, v in state.items() if not k.startswith("pretrained.fc.")}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        variant = self.variant
        if variant not in VARIANTS:
            raise ValueError(f"variant={self.variant!r}; valid: {', '.join(VARIANTS)}")
        (w2, w3, w4), (n2, n3, n4) = VARIANTS[variant]
        size, dt = x.shape[1:3], self.dtype
        # Backbone 1 ("pretrained" in the reference: the ImageNet-initialised one).
        y = ConvBN(8, 3, 2, dtype=dt, name="pretrained_conv1")(x.astype(dt), train)
        enc2 = Enc(w2, n2, dt, name="pretrained_enc2")(y, train)
        enc3 = Enc(w3, n3, dt, name="pretrained_enc3")(enc2, train)
        enc4 = Enc(w4, n4, dt, name="pretrained_enc4")(enc3, train)
        fca = FCAttention(dt, name="pretrained_fca")(enc4, train)
        encs2, fcas = [enc2], [fca]
        # Backbones 2 and 3: the reference names them enc2_2 .. fca_2 and enc2_3, enc3_3,
        # enc3_4 (sic), fca_3.
        for k, names in ((2, ("enc2_2", "enc3_2", "enc4_2")), (3, ("enc2_3", "enc3_3", "enc3_4"))):
            up = resize(fca, enc2.shape[1:3])
            enc2 = Enc(w2, n2, dt, name=names[0])(jnp.concatenate([enc2, up], -1), train)
            enc3 = Enc(w3, n3, dt, name=names[1])(jnp.concatenate([enc3, enc2], -1), train)
            enc4 = Enc(w4, n4, dt, name=names[2])(jnp.concatenate([enc4, enc3], -1), train)
            fca = FCAttention(dt, name=f"fca_{k}")(enc4, train)
            encs2.append(enc2)
            fcas.append(fca)
        target = encs2[0].shape[1:3]  # stride 4
        fusion = sum(
            resize(ConvBN(DECODER, 1, dtype=dt, name=f"enc2_{k}_reduce")(e, train), target)
            for k, e in enumerate(encs2, start=1)
        )
        fusion = ConvBN(DECODER, 1, dtype=dt, name="conv_fusion")(fusion, train)
        for k, f in enumerate(fcas, start=1):
            reduced = ConvBN(DECODER, 1, dtype=dt, name=f"fca_{k}_reduce")(f, train)
            fusion = fusion + resize(reduced, target)
        logits = Conv(
            self.num_classes,
            1,
            use_bias=True,
            kernel_init=layers.torch_default_init,
            dtype=dt,
            name="conv_out",
        )(fusion)
        return resize(logits.astype(jnp.float32), size), {}
