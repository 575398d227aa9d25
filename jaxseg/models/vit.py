"""Plain Vision Transformer encoders (Dosovitskiy et al., 2021): ViT-B/16, ViT-L/16 and the
R50+ViT-B/16 hybrid, laid out as timm's VisionTransformer.

Submodules carry timm's state-dict names (`cls_token`, `pos_embed`, `patch_embed.proj`,
`blocks.0.attn.qkv`, `norm`; the hybrid's `patch_embed.backbone.stem.conv`,
`patch_embed.backbone.stages.0.blocks.0.conv1`, ...), so timm's .safetensors or .pth files
load through jaxseg.models.pretrained as they are.

Position embeddings are stored for a `pretrain_size` x `pretrain_size` image (a grid of
pretrain_size / 16 tokens a side, plus the class token's). At any other input size the grid
is resized bicubically to the input's token grid at run time, as timm's
resample_abs_pos_embed does (dynamic_img_size=True): jax.image.resize's antialiased cubic
computes the same function as torch's antialiased bicubic that timm calls.

Inputs whose sides are no multiple of 16 are padded with zeros at the bottom and right
(`pad_to_patches`); the token grid is then ceil(H / 16) x ceil(W / 16).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.layers import Conv, torch_default_init

# name: (embed dim, depth, heads); patch 16, MLP ratio 4 for all.
VARIANTS = {
    "vit_ti16": (192, 12, 3),
    "vit_b16": (768, 12, 12),
    "vit_l16": (1024, 24, 16),
}
PATCH = 16
# timm inits Linear layers and the embeddings with trunc_normal(std=.02).
_init = nn.initializers.truncated_normal(0.02)
# Flax names cannot hold "."; pretrained.torch_key turns `layers_1` into `layers.1` but
# leaves `layers.1_downsample`, `stages.0_blocks.0`: finish those (a model's torch_renames).
TORCH_RENAMES = ((r"\.(\d+)_(?=[a-z])", r".\1."),)


def check_backbone(backbone: str) -> None:
    if backbone not in VARIANTS:
        raise ValueError(f"backbone={backbone!r}; valid: {', '.join(VARIANTS)}")


def pad_to_patches(x: jax.Array, patch: int = PATCH) -> jax.Array:
    """Zero-pads [B,H,W,C] at the bottom and right to sides that are multiples of patch."""
    h, w = x.shape[1:3]
    return jnp.pad(x, ((0, 0), (0, -h % patch), (0, -w % patch), (0, 0)))


def resize_pos_embed(grid: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bicubic resize of a position-embedding grid [gh,gw,D] -> [h,w,D] as timm's
    resample_abs_pos_embed (torch's antialiased bicubic, Keys a = -0.5, weights renormalised
    at the borders), which jax.image.resize's antialiased cubic equals to float rounding."""
    if tuple(grid.shape[:2]) == tuple(size):
        return grid
    return jax.image.resize(grid, (*size, grid.shape[-1]), "cubic", antialias=True)


class Attention(nn.Module):
    """Multi-head self-attention with a fused "qkv" Linear. x [B,N,C] -> [B,N,C].

    jax.nn.dot_product_attention scales by 1/sqrt(d) and computes the logits and softmax
    in f32 for bf16 inputs; XLA fuses it (and picks cuDNN's flash attention on GPU when
    asked through `implementation`)."""

    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, c = x.shape
        qkv = nn.Dense(3 * c, dtype=self.dtype, kernel_init=_init, name="qkv")(x)
        qkv = qkv.reshape(b, n, 3, self.heads, c // self.heads)
        out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        return nn.Dense(c, dtype=self.dtype, kernel_init=_init, name="proj")(out.reshape(b, n, c))


class Mlp(nn.Module):
    """fc1 (C -> hidden) -> exact GELU -> fc2 (-> C), dropout after each as timm's Mlp."""

    hidden: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        drop = nn.Dropout(self.dropout_rate, deterministic=not train)
        x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=_init, name="fc1")(x)
        x = drop(nn.gelu(x, approximate=False))
        return drop(nn.Dense(c, dtype=self.dtype, kernel_init=_init, name="fc2")(x))


class Block(nn.Module):
    """Pre-norm block (LayerNorms eps 1e-6): x + attn(norm1(x)), then + mlp(norm2(x))."""

    heads: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        drop = nn.Dropout(self.dropout_rate, deterministic=not train)
        y = nn.LayerNorm(1e-6, dtype=self.dtype, name="norm1")(x)
        x = x + drop(Attention(self.heads, self.dtype, name="attn")(y))
        y = nn.LayerNorm(1e-6, dtype=self.dtype, name="norm2")(x)
        return x + Mlp(4 * c, self.dropout_rate, self.dtype, name="mlp")(y, train)


class StdConv(nn.Module):
    """timm's StdConv2d (BiT): a conv whose kernel is standardised per output channel
    (biased variance, eps 1e-8 as timm's hybrid), symmetric torch padding, no bias.
    x [B,H,W,Cin] -> [B,H',W',features]."""

    features: int
    kernel_size: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param(
            "kernel",
            nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
            (k, k, x.shape[-1], self.features),
        )
        mean = kernel.mean(axis=(0, 1, 2), keepdims=True)
        var = kernel.var(axis=(0, 1, 2), keepdims=True)
        kernel = (kernel - mean) / jnp.sqrt(var + 1e-8)
        pad = ((self.stride - 1) + (k - 1)) // 2  # timm's get_padding
        return jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            (self.stride, self.stride),
            ((pad, pad), (pad, pad)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )


def group_norm(dtype: Any, name: str) -> nn.GroupNorm:
    """timm's GroupNormAct norm: 32 groups, eps 1e-5 (torch layout: weight, bias)."""
    return nn.GroupNorm(num_groups=32, epsilon=1e-5, dtype=dtype, name=name)


class BottleneckV2(nn.Module):
    """timm ResNetV2 Bottleneck (preact=False): StdConv 1x1 -> GN+ReLU -> 3x3 (stride) ->
    GN+ReLU -> 1x1 (out) -> GN, + shortcut (StdConv 1x1 + GN where the shape changes),
    ReLU. x [B,H,W,Cin] -> [B,H/stride,W/stride,out]."""

    out: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dt, mid = self.dtype, self.out // 4
        y = nn.relu(group_norm(dt, "norm1")(StdConv(mid, 1, dtype=dt, name="conv1")(x)))
        y = StdConv(mid, 3, self.stride, dtype=dt, name="conv2")(y)
        y = nn.relu(group_norm(dt, "norm2")(y))
        y = group_norm(dt, "norm3")(StdConv(self.out, 1, dtype=dt, name="conv3")(y))
        if self.stride != 1 or x.shape[-1] != self.out:
            x = _Downsample(self.out, self.stride, dt, name="downsample")(x)
        return nn.relu(y + x)


class _Downsample(nn.Module):
    out: int
    stride: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = StdConv(self.out, 1, self.stride, dtype=self.dtype, name="conv")(x)
        return group_norm(self.dtype, "norm")(x)


class ResNetV2Stem(nn.Module):
    """The hybrid's ResNet-50 body, three stages (3, 4, 9 blocks) as timm's
    _resnetv2(padding_same=False). x [B,H,W,3] -> {"stem": [B,H/2,W/2,64] (before the
    max-pool), "stage1": [.., 256] stride 4, "stage2": [.., 512] stride 8, "stage3":
    [.., 1024] stride 16} (sides round up)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        dt = self.dtype
        stem = _Stem(dt, name="stem")
        x = stem(x)
        features = {"stem": x}
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for i, (depth, out) in enumerate(zip((3, 4, 9), (256, 512, 1024), strict=True)):
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                x = BottleneckV2(out, stride, dt, name=f"stages_{i}_blocks_{j}")(x)
            features[f"stage{i + 1}"] = x
        return features


class _Stem(nn.Module):
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = StdConv(64, 7, 2, dtype=self.dtype, name="conv")(x)
        return nn.relu(group_norm(self.dtype, "norm")(x))


class PatchEmbed(nn.Module):
    """16x16 stride-16 conv "proj" (plain), or for the hybrid a ResNetV2 "backbone" at
    stride 16 and a 1x1 "proj". x [B,H,W,3] (sides multiples of 16) ->
    ([B,H/16,W/16,dim], the hybrid's CNN features or {})."""

    dim: int
    hybrid: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict]:
        cnn = {}
        if self.hybrid:
            cnn = ResNetV2Stem(self.dtype, name="backbone")(x)
            x, k = cnn["stage3"], 1
        else:
            k = PATCH
        x = Conv(
            self.dim,
            k,
            stride=k,
            padding=0,
            use_bias=True,
            dtype=self.dtype,
            kernel_init=torch_default_init,  # timm's PatchEmbed keeps torch's default
            name="proj",
        )(x)
        return x, cnn


class VisionTransformer(nn.Module):
    """ViT encoder. x f32[B,H,W,3] (padded to multiples of 16) ->
    {"block0".."block{L-1}": [B,h,w,D] every block's output tokens, "norm": the final
    LayerNorm of the last block's (final_norm), and for the hybrid "stem", "stage1".."stage3" (the
    ResNet's features, strides 2, 4, 8, 16)}; h, w = ceil(H / 16), ceil(W / 16).

    The class token (class_token=True) is prepended as in timm (it attends and is attended
    to) and dropped from the features; TransUNet has none, and no position for it.
    drop_class_token: the token and its position stay stored (timm's layout, so timm files
    load) but the token is dropped once positions are added, before the blocks, as
    mmseg's with_cls_token=False and SETR's VIT_MLA (SETR-MLA).
    final_norm=False leaves out the last LayerNorm and the "norm" feature (mmseg's
    VisionTransformer default, which SETR's heads use: they normalise the tokens themselves).
    dropout_rate: after the position embedding, the attention projection and in the MLP
    (SETR: 0.1).
    """

    backbone: str = "vit_b16"
    pretrain_size: int = 224
    hybrid: bool = False
    class_token: bool = True
    drop_class_token: bool = False
    final_norm: bool = True
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        check_backbone(self.backbone)
        if self.pretrain_size % PATCH:
            raise ValueError(f"pretrain_size={self.pretrain_size} is no multiple of {PATCH}")
        dim, depth, heads = VARIANTS[self.backbone]
        g = self.pretrain_size // PATCH
        x = pad_to_patches(x.astype(self.dtype))
        tokens, features = PatchEmbed(dim, self.hybrid, self.dtype, name="patch_embed")(x)
        b, h, w, _ = tokens.shape
        t = int(self.class_token)
        pos = self.param("pos_embed", _init, (1, t + g * g, dim))
        grid = resize_pos_embed(pos[0, t:].reshape(g, g, dim), (h, w)).reshape(1, h * w, dim)
        x = tokens.reshape(b, h * w, dim)
        if self.class_token:
            cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, dim))
            x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, dim)).astype(self.dtype), x], 1)
            grid = jnp.concatenate([pos[:, :1], grid], axis=1)
        x = x + grid.astype(self.dtype)
        if self.drop_class_token:
            x, t = x[:, t:], 0
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        for i in range(depth):
            x = Block(heads, self.dropout_rate, self.dtype, name=f"blocks_{i}")(x, train)
            features[f"block{i}"] = x[:, t:].reshape(b, h, w, dim)
        if self.final_norm:
            x = nn.LayerNorm(1e-6, dtype=self.dtype, name="norm")(x)
            features["norm"] = x[:, t:].reshape(b, h, w, dim)
        return features
