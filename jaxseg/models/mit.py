"""Mix Transformer (MiT-B0..B5) encoder of SegFormer (Xie et al., 2021).

Four stages, each an overlapping patch embedding (strided conv + LayerNorm), a
stack of pre-norm transformer blocks and a LayerNorm. Attention is "efficient
self-attention": keys and values come from a copy of the tokens shrunk by a
k = s = sr_ratio conv (8, 4, 2, 1 by stage). The feed-forward is Mix-FFN (fc1,
3x3 depthwise conv, exact GELU, fc2), whose conv stands in for position
embeddings, so any input size works.

Submodules carry the names of the NVlabs/mmseg `mix_transformer.py` state dict
(`patch_embed1.proj`, `block1.0.attn.kv`, `norm1`, ...), so its checkpoints load
through jaxseg.models.pretrained; HuggingFace files go through
jaxseg.models.segformer.hf_to_original first.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.layers import Conv

# name: (embed dims, depths); heads (1, 2, 5, 8), sr ratios (8, 4, 2, 1), mlp ratio 4 for all.
VARIANTS = {
    "mit_b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
    "mit_b3": ((64, 128, 320, 512), (3, 4, 18, 3)),
    "mit_b4": ((64, 128, 320, 512), (3, 8, 27, 3)),
    "mit_b5": ((64, 128, 320, 512), (3, 6, 40, 3)),
}
HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
MLP_RATIO = 4

# The original initialises Linear with trunc_normal(std=.02) and convs with
# normal(0, sqrt(2 / fan_out)), fan_out = k*k*out/groups.
_dense_init = nn.initializers.truncated_normal(0.02)


def _fan_out_init(kernel_size: int, features_per_group: int):
    return nn.initializers.normal(math.sqrt(2.0 / (kernel_size**2 * features_per_group)))


def check_backbone(backbone: str) -> None:
    if backbone not in VARIANTS:
        raise ValueError(f"backbone={backbone!r}; valid: {', '.join(VARIANTS)}")


def layer_norm(eps: float, dtype: Any, name: str) -> nn.LayerNorm:
    """nn.LayerNorm whose variables sit directly under `name` (torch: name.weight/bias)."""
    return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name)


class OverlapPatchEmbed(nn.Module):
    """Conv k x k, stride s, pad k//2, then LayerNorm (eps 1e-5 as torch's default).

    x [B,H,W,Cin] -> [B,H',W',features], H' = (H + 2*(k//2) - k) // s + 1.
    """

    features: int
    kernel_size: int
    stride: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        x = Conv(
            self.features,
            k,
            stride=self.stride,
            padding=k // 2,
            use_bias=True,
            dtype=self.dtype,
            kernel_init=_fan_out_init(k, self.features),
            name="proj",
        )(x)
        return layer_norm(1e-5, self.dtype, "norm")(x)


class Attention(nn.Module):
    """Efficient self-attention. x [B,H,W,C] -> [B,H,W,C].

    Queries from every token; keys/values (one fused "kv" Linear, keys first)
    from the tokens after a k = s = sr_ratio conv and LayerNorm (eps 1e-5) when
    sr_ratio > 1. The conv has no padding: a side not divisible by sr_ratio drops
    its remainder, as in PyTorch.
    """

    heads: int
    sr_ratio: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        d = c // self.heads
        dense = lambda f, name: nn.Dense(f, dtype=self.dtype, kernel_init=_dense_init, name=name)
        q = dense(c, "q")(x).reshape(b, h * w, self.heads, d)
        if self.sr_ratio > 1:
            r = self.sr_ratio
            if h < r or w < r:
                # PyTorch fails here too; say why rather than attend over zero tokens.
                raise ValueError(
                    f"tokens {h}x{w} smaller than sr_ratio {r}: MiT needs input sides >= 29"
                )
            x = Conv(
                c,
                r,
                stride=r,
                padding=0,
                use_bias=True,
                dtype=self.dtype,
                kernel_init=_fan_out_init(r, c),
                name="sr",
            )(x)
            x = layer_norm(1e-5, self.dtype, "norm")(x)
        kv = dense(2 * c, "kv")(x).reshape(b, -1, 2, self.heads, d)
        # Scale 1/sqrt(d); jax computes logits and softmax in f32 for bf16 inputs too.
        out = jax.nn.dot_product_attention(q, kv[:, :, 0], kv[:, :, 1])
        return dense(c, "proj")(out.reshape(b, h, w, c))


class MixFFN(nn.Module):
    """fc1 (C -> 4C) -> 3x3 depthwise conv -> GELU (exact) -> fc2. [B,H,W,C] -> [B,H,W,C]."""

    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=_dense_init, name="fc1")(x)
        x = _DWConv(self.dtype, name="dwconv")(x)
        x = nn.gelu(x, approximate=False)
        return nn.Dense(c, dtype=self.dtype, kernel_init=_dense_init, name="fc2")(x)


class _DWConv(nn.Module):
    """Holds the depthwise conv as "dwconv.dwconv", the original's nesting."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        return Conv(
            c,
            3,
            groups=c,
            use_bias=True,
            dtype=self.dtype,
            kernel_init=_fan_out_init(3, 1),
            name="dwconv",
        )(x)


def drop_path(module: nn.Module, x: jax.Array, rate: float, train: bool) -> jax.Array:
    """Stochastic depth: zeroes the whole residual branch of a sample with probability
    `rate` and scales survivors by 1/(1-rate); identity at eval. Uses the "dropout" rng."""
    if not train or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, (x.shape[0], 1, 1, 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Block(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then + mlp(norm2(x)); norms eps 1e-6."""

    heads: int
    sr_ratio: int
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        y = layer_norm(1e-6, self.dtype, "norm1")(x)
        y = Attention(self.heads, self.sr_ratio, self.dtype, name="attn")(y)
        x = x + drop_path(self, y, self.drop_path_rate, train)
        y = layer_norm(1e-6, self.dtype, "norm2")(x)
        y = MixFFN(MLP_RATIO * c, self.dtype, name="mlp")(y)
        return x + drop_path(self, y, self.drop_path_rate, train)


class MixVisionTransformer(nn.Module):
    """MiT encoder. x f32[B,H,W,3] -> {"stage1".."stage4": [B,h_i,w_i,C_i]}.

    Strides 4, 8, 16, 32 (h_1 = (H - 1) // 4 + 1, then h_{i+1} = (h_i - 1) // 2 + 1),
    channels the variant's embed dims. Stochastic depth grows linearly from 0 to
    drop_path_rate over all blocks, as the original.
    """

    backbone: str = "mit_b0"
    drop_path_rate: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        check_backbone(self.backbone)
        dims, depths = VARIANTS[self.backbone]
        rates = np.linspace(0.0, self.drop_path_rate, sum(depths)).tolist()
        x = x.astype(self.dtype)
        features, n = {}, 0
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            s = i + 1
            k, stride = (7, 4) if i == 0 else (3, 2)
            x = OverlapPatchEmbed(dim, k, stride, self.dtype, name=f"patch_embed{s}")(x)
            for j in range(depth):
                x = Block(HEADS[i], SR_RATIOS[i], rates[n], self.dtype, name=f"block{s}_{j}")(
                    x, train
                )
                n += 1
            x = layer_norm(1e-6, self.dtype, f"norm{s}")(x)
            features[f"stage{s}"] = x
        return features
