"""ESPNet and ESPNet-C (Mehta et al., ECCV 2018), after the authors' release (sacmehta/ESPNet,
Model.py), with its module names (encoder.level1, level2_i, b1..b3, up_l3, ...).

- ESP module: 1x1 conv to n = C/5 channels (the downsampling variant: 3x3 /2), five
  parallel 3x3 convs with dilations 1, 2, 4, 8, 16 (the first to C - 4n channels),
  hierarchical feature fusion (each dilated output plus the sum of the smaller rates
  before concatenation), a residual when widths agree, BN (eps 1e-3) + PReLU;
- encoder (ESPNet-C): CBR 3x3 16 /2; concatenation with the input average-pooled /2
  (input reinforcement), BR; ESP /2 to 64, alpha2 ESP modules, concatenation with the
  level's first output and the input pooled /4, BR; ESP /2 to 128, alpha3 ESP modules,
  concatenation with the level's first output, BR (256); 1x1 conv to the classes;
- ESPNet adds the light decoder: the encoder's logits through BN and a 2x2 stride-2
  transposed conv, a 1x1 projection of level 2 to the classes, both concatenated, BR, an
  ESP module (no residual), 2x2 transposed conv + BR, concatenation with level 1 (19
  channels), CBR 3x3, and a last 2x2 transposed conv to full resolution.

Variants (`variant`): "espnet" (default) and "espnet_c" (the encoder alone, its logits
upsampled bilinearly from stride 8), both with alpha2 = 2, alpha3 = 8: the paper's, and the
release's (train/main.py's defaults `--p 2 --q 8`, the weights it ships as
pretrained/encoder/espnet_p_2_q_8.pth; Model.py's ESPNet_Encoder signature says p=5,
q=3, which the training script overrides). Inputs are padded to a multiple of 8 and the
logits cropped back, so any H, W works. Parameters (20 classes, as the paper's Cityscapes
model): 365,109 for ESPNet (the paper: 0.364 M, +0.3 %), 349,449 for ESPNet-C; pinned
in tests/test_models_espnet.py.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.layers import (
    ATROUS_IMPLS,
    TRANSPOSE_IMPLS,
    Conv,
    ConvTranspose2x2,
    _check,
    resize,
)
from jaxseg.models.table import register

VARIANTS = {"espnet": (2, 8), "espnet_c": (2, 8)}  # (alpha2, alpha3)
RATES = (1, 2, 4, 8, 16)


def _bn(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
    """The release's BatchNorm2d(eps=1e-3), torch momentum 0.1."""
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-3, dtype=dtype, name=name
    )


class BR(nn.Module):
    """BN (eps 1e-3) + per-channel PReLU (torch's init 0.25): names "bn", "act"."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = _bn(train, self.dtype, "bn")(x)
        return PReLU(name="act")(x)


class PReLU(nn.Module):
    """torch.nn.PReLU(C): one slope per channel (param "weight")."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        a = self.param("weight", nn.initializers.constant(0.25), (x.shape[-1],))
        return jnp.where(x >= 0, x, a.astype(x.dtype) * x)


class CBR(nn.Module):
    """k x k conv /stride (no bias) + BN + PReLU: names "conv", "bn", "act"."""

    features: int
    kernel_size: int = 3
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = Conv(self.features, self.kernel_size, self.stride, dtype=self.dtype, name="conv")(x)
        return PReLU(name="act")(_bn(train, self.dtype, "bn")(x))


class ESP(nn.Module):
    """ESP module: x [B,H,W,Cin] -> [B,H/stride,W/stride,features].

    stride 2 is the release's DownSamplerB (3x3 /2 reduction, no residual); stride 1 is
    DilatedParllelResidualBlockB (1x1 reduction, residual when `add`).
    """

    features: int
    stride: int = 1
    add: bool = True
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt = self.dtype
        # Under 5 channels (the decoder's ESP with few classes) every branch keeps one.
        n = max(self.features // 5, 1)
        n1 = max(self.features - 4 * n, 1)
        k = 3 if self.stride == 2 else 1
        y = Conv(n, k, self.stride, dtype=dt, name="c1")(x)
        outs = [
            Conv(
                n1 if d == 1 else n,
                3,
                dilation=d,
                atrous_impl=self.atrous_impl,
                dtype=dt,
                name=f"d{d}",
            )(y)
            for d in RATES
        ]
        # Hierarchical feature fusion: the sums remove the gridding of large dilations.
        fused, total = [outs[0]], outs[1]
        fused.append(total)
        for o in outs[2:]:
            total = total + o
            fused.append(total)
        y = jnp.concatenate(fused, axis=-1)
        if self.stride == 1 and self.add:
            y = y + x
        return BR(dt, name="bn")(y, train)


class Encoder(nn.Module):
    """ESPNet-C: x [B,H,W,3] (sides multiples of 8) -> (level-1 features [B,H/2,W/2,19],
    level-2 features [B,H/4,W/4,131], logits [B,H/8,W/8,num_classes])."""

    num_classes: int
    alpha2: int
    alpha3: int
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    # The release's key names (train/Model.py): its downsampling ESP modules are
    # "level2_0"/"level3_0" beside the lists "level2"/"level3" (Flax's "level2_0" would
    # read as the list's first item) and hold BN and PReLU directly, not in a BR; its
    # plain and dilated convs (classes C, CDilated) wrap the nn.Conv2d as ".conv".
    torch_renames: ClassVar[tuple[tuple[str, str], ...]] = (
        (r"level(\d)_down", r"level\1_0"),
        (r"(level\d_0)\.bn\.(bn|act)\.", r"\1.\2."),
        (r"\.(c1|d1|d2|d4|d8|d16)\.weight$", r".\1.conv.weight"),
        (r"^(encoder\.classifier|level3_C)\.weight$", r"\1.conv.weight"),
    )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
        dt, esp = self.dtype, dict(atrous_impl=self.atrous_impl, dtype=self.dtype)

        def pool(y):  # the release's AvgPool2d(3, 2, padding=1), padding counted
            return nn.avg_pool(y, (3, 3), (2, 2), padding=((1, 1), (1, 1)))

        inp1 = pool(x)
        inp2 = pool(inp1)
        out0 = CBR(16, 3, 2, dt, name="level1")(x, train)
        out0_cat = BR(dt, name="b1")(jnp.concatenate([out0, inp1], -1), train)
        out1_0 = ESP(64, 2, name="level2_down", **esp)(out0_cat, train)
        out1 = out1_0
        for i in range(self.alpha2):
            out1 = ESP(64, name=f"level2_{i}", **esp)(out1, train)
        out1_cat = BR(dt, name="b2")(jnp.concatenate([out1, out1_0, inp2], -1), train)
        out2_0 = ESP(128, 2, name="level3_down", **esp)(out1_cat, train)
        out2 = out2_0
        for i in range(self.alpha3):
            out2 = ESP(128, name=f"level3_{i}", **esp)(out2, train)
        out2_cat = BR(dt, name="b3")(jnp.concatenate([out2_0, out2], -1), train)
        return out0_cat, out1_cat, Conv(self.num_classes, 1, dtype=dt, name="classifier")(out2_cat)


@register("espnet")
class ESPNet(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], aux {})."""

    num_classes: int
    variant: str = "espnet"  # "espnet" | "espnet_c"
    atrous_impl: str = "plain"
    transpose_impl: str = "depth_to_space"
    dtype: Any = jnp.float32

    torch_renames: ClassVar[tuple[tuple[str, str], ...]] = Encoder.torch_renames

    @staticmethod
    def adapt_state_dict(state: dict) -> dict:
        """The release's ESPNet-C file (pretrained/encoder/*.pth, an ESPNet_Encoder's
        state dict) has the encoder's keys without the "encoder." that ESPNet's file has."""
        if any(k.startswith("encoder.") for k in state):
            return state
        return {f"encoder.{k}": v for k, v in state.items()}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        variant = self.variant
        if variant not in VARIANTS:
            raise ValueError(f"variant={self.variant!r}; valid: {', '.join(VARIANTS)}")
        _check("atrous_impl", self.atrous_impl, ATROUS_IMPLS)
        _check("transpose_impl", self.transpose_impl, TRANSPOSE_IMPLS)
        dt, k = self.dtype, self.num_classes
        height, width = x.shape[1:3]
        # The decoder's 2x2 transposed convs double exactly: pad to a multiple of 8.
        x = jnp.pad(x, ((0, 0), (0, -height % 8), (0, -width % 8), (0, 0))).astype(dt)
        out0_cat, out1_cat, logits = Encoder(
            k, *VARIANTS[variant], self.atrous_impl, dt, name="encoder"
        )(x, train)
        if variant == "espnet_c":
            logits = resize(logits, x.shape[1:3])[:, :height, :width]
            return logits.astype(jnp.float32), {}

        esp = dict(atrous_impl=self.atrous_impl, dtype=dt)
        up = dict(use_bias=False, transpose_impl=self.transpose_impl, dtype=dt)
        y = ConvTranspose2x2(k, name="up_l3_0", **up)(_bn(train, dt, "br")(logits))
        y = jnp.concatenate([Conv(k, 1, dtype=dt, name="level3_C")(out1_cat), y], -1)
        y = BR(dt, name="combine_l2_l3_0")(y, train)
        y = ESP(k, add=False, name="combine_l2_l3_1", **esp)(y, train)
        y = BR(dt, name="up_l2_1")(ConvTranspose2x2(k, name="up_l2_0", **up)(y), train)
        y = CBR(k, 3, dtype=dt, name="conv")(jnp.concatenate([y, out0_cat], -1), train)
        y = ConvTranspose2x2(k, name="classifier", **up)(y)
        return y[:, :height, :width].astype(jnp.float32), {}
