"""BiSeNet V2 (Yu et al., IJCV 2021), Table 1 and Figs. 4-6 of the paper.

- detail branch: 3x3 ConvBNReLU stages S1 (64 /2, 64), S2 (64 /2, 64, 64), S3 (128 /2,
  128, 128): stride 8, 128 channels;
- semantic branch: stem (3x3 conv 16 /2; then a 1x1 conv 8 + 3x3 conv 16 /2 beside a 3x3
  max-pool /2, concatenated, 3x3 conv 16: stride 4), gather-and-expand layers S3 (32),
  S4 (64), S5 (128, four layers), each stage starting with a stride-2 one, then context
  embedding (global average pool, BN, 1x1 ConvBNReLU, added to the input, 3x3
  ConvBNReLU): stride 32, 128 channels;
- GE layer (Fig. 5): 3x3 ConvBNReLU, 3x3 depthwise conv expanding 6x + BN (stride 2: a
  second depthwise conv + BN), 1x1 conv + BN, plus the input (stride 2: through a 3x3
  depthwise conv /2 + BN and a 1x1 conv + BN), ReLU;
- bilateral guided aggregation (Fig. 6): the detail branch through a depthwise 3x3 + BN
  + 1x1 conv, gated by sigmoid(4x-upsampled BN(3x3 conv) of the semantic branch); the
  semantic branch through a depthwise 3x3 + BN + 1x1 conv, sigmoid, gating the detail
  branch after a 3x3 conv /2 + BN and a 3x3 average pool /2, then 4x upsampled; sum,
  3x3 ConvBNReLU;
- heads: 3x3 ConvBNReLU (1024 channels for the main head, 128 for the boosters) + 1x1
  conv (bias), upsampled bilinearly to the input. Booster heads (aux_head) on the stem,
  S3, S4 and S5 before the context embedding: aux["stem"], aux["s3"], aux["s4"], aux["s5"],
  each weighted 1 in the paper's loss.

The nonlinearities are the paper's: no ReLU after the depthwise convs (the widely used
CoinCheung/BiSeNet adds one there, "not shown in paper"); its booster heads also add a 2x
upsampling and a ConvBNReLU the paper does not have, and its head widths (1024 main, 128
boosters) are used here, the paper giving none. Its BGA layer upsamples 4x by nearest
neighbour (nn.Upsample's default), this one bilinearly. Its keys load (`torch_renames`);
its weights compute what they were trained for only up to these differences.

Parameters (19 classes): 3,358,627 without the boosters (the 3.4 M usually quoted for
BiSeNetV2), 3,645,935 with them; pinned in tests/test_models_bisenet.py as a sum over the
layers.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.bisenet import Head
from jaxseg.models.layers import ConvBN, resize
from jaxseg.models.table import register

EXPANSION = 6


class StemBlock(nn.Module):
    """x [B,H,W,3] -> [B,H/4,W/4,16]."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt = self.dtype
        x = ConvBN(16, 3, 2, dtype=dt, name="conv")(x, train)
        left = ConvBN(8, 1, dtype=dt, name="left_0")(x, train)
        left = ConvBN(16, 3, 2, dtype=dt, name="left_1")(left, train)
        right = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        return ConvBN(16, 3, dtype=dt, name="fuse")(jnp.concatenate([left, right], -1), train)


class GatherExpand(nn.Module):
    """GE layer: x [B,H,W,Cin] -> [B,H/stride,W/stride,features]."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt, cin = self.dtype, x.shape[-1]
        mid = cin * EXPANSION
        y = ConvBN(cin, 3, dtype=dt, name="conv1")(x, train)
        # A depthwise conv with channel multiplier 6: groups = Cin, 6 outputs per group.
        y = layers.Conv(mid, 3, self.stride, groups=cin, dtype=dt, name="dwconv1")(y)
        y = layers.batch_norm(train, dt, name="dwconv1_bn")(y)
        if self.stride == 2:
            y = ConvBN(mid, 3, depthwise=True, relu=False, dtype=dt, name="dwconv2")(y, train)
        y = ConvBN(self.features, 1, relu=False, dtype=dt, name="conv2")(y, train)
        if self.stride == 2:
            x = ConvBN(cin, 3, 2, depthwise=True, relu=False, dtype=dt, name="shortcut_0")(x, train)
            x = ConvBN(self.features, 1, relu=False, dtype=dt, name="shortcut_1")(x, train)
        return nn.relu(y + x)


class ContextEmbedding(nn.Module):
    """CE: x [B,h,w,C] -> [B,h,w,C]."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt, c = self.dtype, x.shape[-1]
        g = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(dt)
        g = layers.batch_norm(train, dt, name="bn")(g)
        g = ConvBN(c, 1, dtype=dt, name="conv_gap")(g, train)
        return ConvBN(c, 3, dtype=dt, name="conv_last")(x + g, train)


class BGALayer(nn.Module):
    """(detail [B,H/8,W/8,C], semantic [B,H/32,W/32,C]) -> [B,H/8,W/8,C]."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, detail: jax.Array, semantic: jax.Array, train: bool) -> jax.Array:
        dt, c = self.dtype, detail.shape[-1]
        left1 = ConvBN(c, 3, depthwise=True, relu=False, dtype=dt, name="left1_0")(detail, train)
        left1 = layers.Conv(c, 1, dtype=dt, name="left1_1")(left1)
        left2 = ConvBN(c, 3, 2, relu=False, dtype=dt, name="left2_0")(detail, train)
        # Padding counts in the average, as torch's AvgPool2d default (count_include_pad).
        left2 = nn.avg_pool(left2, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        right1 = ConvBN(c, 3, relu=False, dtype=dt, name="right1")(semantic, train)
        right2 = ConvBN(c, 3, depthwise=True, relu=False, dtype=dt, name="right2_0")(
            semantic, train
        )
        right2 = layers.Conv(c, 1, dtype=dt, name="right2_1")(right2)
        left = left1 * jax.nn.sigmoid(resize(right1, detail.shape[1:3]))
        right = resize(left2 * jax.nn.sigmoid(right2), detail.shape[1:3])
        return ConvBN(c, 3, dtype=dt, name="conv")(left + right, train)


@register("bisenetv2")
class BiSeNetV2(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,K], aux).

    aux: {"stem", "s3", "s4", "s5"}: f32[B,H,W,K] booster logits with aux_head, else {}.
    """

    num_classes: int
    aux_head: bool = False
    dtype: Any = jnp.float32

    # The keys of CoinCheung/BiSeNet's lib/models/bisenetv2.py: nested branches ("detail.S1",
    # "segment.S5_4", the context embedding "segment.S5_5") and nn.Sequential indices where
    # the Flax modules have ConvBN's "conv"/"bn" (GE layers, BGA, head "conv_out.1").
    torch_renames: ClassVar[tuple[tuple[str, str], ...]] = (
        (r"^detail_S", "detail.S"),
        (r"^segment_S5\.", "segment.S5_4."),
        (r"^segment_ce\.", "segment.S5_5."),
        (r"^segment_S", "segment.S"),
        (r"\.dwconv1\.weight$", ".dwconv1.0.weight"),
        (r"\.dwconv1_bn\.", ".dwconv1.1."),
        (r"(\.S\d(_4)?\.[1-9])\.dwconv1\.", r"\1.dwconv."),  # stride 1: "dwconv"
        (r"\.(dwconv2|conv2)\.conv\.", r".\1.0."),
        (r"\.(dwconv2|conv2)\.bn\.", r".\1.1."),
        (r"\.shortcut\.0\.conv\.", ".shortcut.0."),
        (r"\.shortcut\.0\.bn\.", ".shortcut.1."),
        (r"\.shortcut\.1\.conv\.", ".shortcut.2."),
        (r"\.shortcut\.1\.bn\.", ".shortcut.3."),
        (r"^bga\.(left1|right2)\.1\.", r"bga.\1.2."),
        (r"^bga\.(left1|left2|right2)\.0\.conv\.", r"bga.\1.0."),
        (r"^bga\.(left1|left2|right2)\.0\.bn\.", r"bga.\1.1."),
        (r"^bga\.(right1|conv)\.conv\.", r"bga.\1.0."),
        (r"^bga\.(right1|conv)\.bn\.", r"bga.\1.1."),
        (r"^aux5\.", "aux5_4."),
        (r"^(head|aux[\d_]+)\.conv_3x3\.", r"\1.conv."),
        (r"^(head|aux[\d_]+)\.conv_1x1\.", r"\1.conv_out.1."),
    )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        size, dt = x.shape[1:3], self.dtype
        x = x.astype(dt)
        d = x
        for s, plan in enumerate(((64, 64), (64, 64, 64), (128, 128, 128)), start=1):
            for j, width in enumerate(plan):
                d = ConvBN(width, 3, 2 if j == 0 else 1, dtype=dt, name=f"detail_S{s}_{j}")(
                    d, train
                )
        taps = {"stem": StemBlock(dt, name="segment_S1S2")(x, train)}
        y = taps["stem"]
        for s, (width, n) in zip((3, 4, 5), ((32, 2), (64, 2), (128, 4)), strict=True):
            for j in range(n):
                y = GatherExpand(width, 2 if j == 0 else 1, dt, name=f"segment_S{s}_{j}")(y, train)
            taps[f"s{s}"] = y
        y = ContextEmbedding(dt, name="segment_ce")(y, train)
        fused = BGALayer(dt, name="bga")(d, y, train)
        logits = Head(self.num_classes, 1024, dt, name="head")(fused, train)
        aux = {}
        if self.aux_head:
            for i, (key, feat) in enumerate(taps.items(), start=2):
                a = Head(self.num_classes, 128, dt, name=f"aux{i}")(feat, train)
                aux[key] = resize(a.astype(jnp.float32), size)
        return resize(logits.astype(jnp.float32), size), aux
