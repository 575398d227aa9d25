"""Swin Transformer encoders (Liu et al., 2021): Swin-T, Swin-S, Swin-B (window 7), laid
out as timm 1.0's SwinTransformer.

Submodules carry timm's state-dict names (`patch_embed.proj`, `patch_embed.norm`,
`layers.1.downsample.reduction`, `layers.0.blocks.0.attn.relative_position_bias_table`,
`norm`), so timm's .safetensors or .pth files load through jaxseg.models.pretrained as they
are; timm's downsample (patch merging) opens stages 2-4, where the original code closed
stages 1-3. The relative-position index and the shift mask are constants computed here
(timm stores the index as a buffer, which loads as "unused").

Any input size: the image is zero-padded at the bottom and right to a multiple of the
4x4 patch, patch merging pads odd sides by one (as timm), and each block pads its map to
a multiple of the window before the cyclic shift (as mmseg's Swin; timm pads after the
shift, which only differs when padding is needed). The bias tables are used as they are:
a map no larger than the window in one direction attends over its whole extent there
with the table's central entries and no shift, as timm sizes windows for such maps.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models import vit
from jaxseg.models.layers import Conv, torch_default_init
from jaxseg.models.mit import drop_path
from jaxseg.models.vit import Mlp, _init  # timm's init and MLP, as the ViT's

# name: (embed dim, depths, heads); patch 4, window 7, MLP ratio 4 for all.
VARIANTS = {
    "swin_t": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "swin_s": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "swin_b": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
}
WINDOW = 7
PATCH = 4
TORCH_RENAMES = vit.TORCH_RENAMES  # the same key renames as the ViT's


def check_backbone(backbone: str) -> None:
    if backbone not in VARIANTS:
        raise ValueError(f"backbone={backbone!r}; valid: {', '.join(VARIANTS)}")


def relative_index(wh: int, ww: int, ws: int = WINDOW) -> np.ndarray:
    """i32[wh*ww, wh*ww]: row of the (2ws-1)^2 bias table for each query/key pair of a
    wh x ww window (timm's get_relative_position_index when wh = ww = ws)."""
    coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :] + ws - 1
    return (rel[0] * (2 * ws - 1) + rel[1]).astype(np.int32)


def _regions(size: int, window: int, shift: int) -> np.ndarray:
    """Region id of each row (or column) after a cyclic shift: timm's three slices."""
    ids = np.zeros(size, np.int32)
    if shift:
        ids[size - window : size - shift] = 1
        ids[size - shift :] = 2
    return ids


def shift_mask(hp: int, wp: int, window: tuple[int, int], shift: tuple[int, int]) -> np.ndarray:
    """f32[nW, N, N]: -100 between tokens of a shifted window that came from different
    regions of the map, 0 elsewhere (timm's attn_mask; nW windows of N tokens)."""
    (wh, ww), (sh, sw) = window, shift
    img = _regions(hp, wh, sh)[:, None] * 3 + _regions(wp, ww, sw)[None, :]
    win = img.reshape(hp // wh, wh, wp // ww, ww).transpose(0, 2, 1, 3).reshape(-1, wh * ww)
    return np.where(win[:, None, :] != win[:, :, None], -100.0, 0.0).astype(np.float32)


def window_and_shift(h: int, w: int, ws: int = WINDOW) -> tuple[tuple, tuple]:
    """timm's _calc_window_shift: per side, a map no larger than the window is one window
    and is not shifted; otherwise window ws, shift ws // 2."""
    window = tuple(min(r, ws) for r in (h, w))
    shift = tuple(0 if r <= ws else ws // 2 for r in (h, w))
    return window, shift


class WindowAttention(nn.Module):
    """Multi-head attention inside windows with a relative position bias.

    x [B*nW, wh, ww, C] windows -> same shape. mask f32[nW, N, N] or None. The logits
    (bias and mask added) and the softmax are f32 under bf16 compute; the two matmuls are
    einsums XLA fuses with the softmax."""

    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: np.ndarray | None) -> jax.Array:
        bw, wh, ww, c = x.shape
        n, d = wh * ww, c // self.heads
        table = self.param(
            "relative_position_bias_table", _init, ((2 * WINDOW - 1) ** 2, self.heads)
        )
        bias = table[relative_index(wh, ww)].transpose(2, 0, 1)  # [heads, N, N]
        qkv = nn.Dense(3 * c, dtype=self.dtype, kernel_init=_init, name="qkv")(x)
        qkv = qkv.reshape(bw, n, 3, self.heads, d)
        q, k, v = qkv[:, :, 0] * d**-0.5, qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        logits = logits + bias
        if mask is not None:
            nw = mask.shape[0]
            logits = logits.reshape(bw // nw, nw, self.heads, n, n) + mask[None, :, None]
            logits = logits.reshape(bw, self.heads, n, n)
        attn = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(bw, wh, ww, c)
        return nn.Dense(c, dtype=self.dtype, kernel_init=_init, name="proj")(out)


class SwinBlock(nn.Module):
    """(Shifted) window block, pre-norm (LayerNorms eps 1e-5). x [B,H,W,C] -> same.

    shifted: the odd blocks of a stage shift by window // 2 (when the map is larger than
    the window)."""

    heads: int
    shifted: bool
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b, h, w, c = x.shape
        window, shift = window_and_shift(h, w)
        shift = shift if self.shifted else (0, 0)
        y = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm1")(x)
        ph, pw = -h % window[0], -w % window[1]
        y = jnp.pad(y, ((0, 0), (0, ph), (0, pw), (0, 0)))
        hp, wp = h + ph, w + pw
        if any(shift):
            y = jnp.roll(y, (-shift[0], -shift[1]), axis=(1, 2))
        wh, ww = window
        y = y.reshape(b, hp // wh, wh, wp // ww, ww, c).transpose(0, 1, 3, 2, 4, 5)
        y = y.reshape(-1, wh, ww, c)
        mask = shift_mask(hp, wp, window, shift) if any(shift) else None
        y = WindowAttention(self.heads, self.dtype, name="attn")(y, mask)
        y = y.reshape(b, hp // wh, wp // ww, wh, ww, c).transpose(0, 1, 3, 2, 4, 5)
        y = y.reshape(b, hp, wp, c)
        if any(shift):
            y = jnp.roll(y, shift, axis=(1, 2))
        x = x + drop_path(self, y[:, :h, :w], self.drop_path_rate, train)
        y = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm2")(x)
        y = Mlp(4 * x.shape[-1], dtype=self.dtype, name="mlp")(y, train)
        return x + drop_path(self, y, self.drop_path_rate, train)


class PatchMerging(nn.Module):
    """timm's PatchMerging: pad odd sides, gather each 2x2 neighbourhood (order (0,0),
    (1,0), (0,1), (1,1) in (row, col)), LayerNorm(4C), Linear 4C -> 2C without bias.
    x [B,H,W,C] -> [B,ceil(H/2),ceil(W/2),2C]."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        h, w = x.shape[1:3]
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5)
        x = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm")(x.reshape(b, h // 2, w // 2, 4 * c))
        return nn.Dense(
            2 * c, use_bias=False, dtype=self.dtype, kernel_init=_init, name="reduction"
        )(x)


class PatchEmbed(nn.Module):
    """4x4 stride-4 conv "proj" + LayerNorm "norm". [B,H,W,3] -> [B,H/4,W/4,dim]."""

    dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = Conv(
            self.dim,
            PATCH,
            stride=PATCH,
            padding=0,
            use_bias=True,
            dtype=self.dtype,
            kernel_init=torch_default_init,  # timm's PatchEmbed keeps torch's default
            name="proj",
        )(x)
        return nn.LayerNorm(1e-5, dtype=self.dtype, name="norm")(x)


class SwinTransformer(nn.Module):
    """Swin encoder. x f32[B,H,W,3] (any H, W) -> {
      "patch_embed": [B,h1,w1,C] (stride 4, h1 = ceil(H/4)),
      "merged2".."merged4": the patch-merged tokens entering stages 2-4 (strides 8-32),
      "stage1".."stage4": each stage's output [B,h_i,w_i,C*2^(i-1)],
      "norm": the final LayerNorm of stage4 }.

    depths: () for the variant's own; Swin-Unet's official config runs swin_t's widths
    at depths (2, 2, 2, 2). Stochastic depth grows linearly to drop_path_rate.
    """

    backbone: str = "swin_t"
    depths: tuple[int, ...] = ()
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        check_backbone(self.backbone)
        dim, depths, heads = VARIANTS[self.backbone]
        depths = tuple(self.depths) or depths
        rates = np.linspace(0.0, self.drop_path_rate, sum(depths)).tolist()
        h, w = x.shape[1:3]
        x = jnp.pad(x.astype(self.dtype), ((0, 0), (0, -h % PATCH), (0, -w % PATCH), (0, 0)))
        x = PatchEmbed(dim, self.dtype, name="patch_embed")(x)
        features, n = {"patch_embed": x}, 0
        for i, depth in enumerate(depths):
            if i > 0:
                x = PatchMerging(self.dtype, name=f"layers_{i}_downsample")(x)
                features[f"merged{i + 1}"] = x
            for j in range(depth):
                x = SwinBlock(
                    heads[i], j % 2 == 1, rates[n], self.dtype, name=f"layers_{i}_blocks_{j}"
                )(x, train)
                n += 1
            features[f"stage{i + 1}"] = x
        features["norm"] = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm")(x)
        return features
