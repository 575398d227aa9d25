"""Swin-Unet (Cao et al., 2021): a Swin Transformer U-Net, as the official code
(HuCaoFighting/Swin-Unet, SwinTransformerSys with configs/swin_tiny_patch4_window7_224_lite).

Encoder: Swin-T widths and heads at the official config's depths (2, 2, 2, 2), stochastic
depth 0.2, in timm's layout (so timm's swin_tiny file fills it: its first two blocks of
stage 3 load, the other four are reported unused). Decoder, deepest first: patch
expanding (Linear C -> 2C without bias, 2x2 depth-to-space, LayerNorm C/2), then per level
a skip concatenation with the encoder tokens entering that level, a Linear 2C -> C
("concat_back_dim"), that level's number of Swin blocks and another patch expanding
(not after the last level); LayerNorm ("norm_up"); the final 4x patch expanding (Linear
C -> 16C without bias, 4x4 depth-to-space, LayerNorm C) and a 1x1 conv without bias.

The release's checkpoints load as they are (`adapt_state_dict`; the decoder's names,
`layers_up.1.blocks.0`, `concat_back_dim.1`, `norm_up`, `up.expand`, `output`, are the
release's): tests/test_models_swin.py's twin.

About 27 M parameters at 224x224 (paper: 27.17 M; tests/test_models_swin.py).
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.layers import Conv
from jaxseg.models.swin import TORCH_RENAMES, VARIANTS, SwinBlock, SwinTransformer, check_backbone
from jaxseg.models.table import register

DEPTHS = (2, 2, 2, 2)  # the official Swin-Unet config's encoder and decoder depths
DROP_PATH = 0.2
_init = nn.initializers.truncated_normal(0.02)


def depth_to_space(x: jax.Array, r: int) -> jax.Array:
    """[B,H,W,r*r*C] -> [B,rH,rW,C], channels split as einops '(p1 p2 c)'."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, r, r, c // (r * r)).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * r, w * r, c // (r * r))


class PatchExpand(nn.Module):
    """Linear "expand" without bias (C -> 2C for scale 2, C -> 16C for scale 4),
    depth-to-space by `scale`, LayerNorm "norm".
    [B,H,W,C] -> [B,2H,2W,C/2] (scale 2) or [B,4H,4W,C] (scale 4)."""

    scale: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        out = 2 * c if self.scale == 2 else 16 * c
        x = nn.Dense(out, use_bias=False, dtype=self.dtype, kernel_init=_init, name="expand")(x)
        x = depth_to_space(x, self.scale)
        return nn.LayerNorm(1e-5, dtype=self.dtype, name="norm")(x)


@register("swin_unet")
class SwinUNet(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], {}).

    backbone: swin_t (the paper's; swin_s has the same widths, so the same network here)
    or swin_b (widths 128..1024), always at the official depths (2, 2, 2, 2).
    """

    num_classes: int
    backbone: str = "swin_t"
    dtype: Any = jnp.float32

    torch_renames = TORCH_RENAMES

    @staticmethod
    def adapt_state_dict(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The release's checkpoints (HuCaoFighting/Swin-Unet, and the original Swin files it
        starts from): the wrapper's "swin_unet." prefix stripped, the constant buffers
        (relative_position_index, attn_mask: computed here) dropped, and patch merging moved
        from the end of stage i (`layers.i.downsample`) to the start of stage i + 1, where
        timm and this encoder keep it. timm's files pass unchanged."""
        state = {
            k.removeprefix("swin_unet."): v
            for k, v in state.items()
            if not k.endswith(("relative_position_index", "attn_mask"))
        }
        if not any(k.startswith("layers.0.downsample.") for k in state):
            return state

        def move(key: str) -> str:
            m = re.match(r"layers\.(\d+)\.downsample\.", key)
            return f"layers.{int(m[1]) + 1}.downsample.{key[m.end() :]}" if m else key

        return {move(k): v for k, v in state.items()}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        check_backbone(self.backbone)
        _, _, heads = VARIANTS[self.backbone]
        dt = self.dtype
        h, w = x.shape[1:3]
        feats = SwinTransformer(self.backbone, DEPTHS, DROP_PATH, dt, name="backbone")(x, train)
        skips = [feats["patch_embed"], feats["merged2"], feats["merged3"]]
        rates = np.linspace(0.0, DROP_PATH, sum(DEPTHS)).tolist()
        y = PatchExpand(2, dt, name="layers_up_0")(feats["norm"])
        for i in (2, 1, 0):  # the encoder level this decoder level mirrors
            skip = skips[i]
            y = y[:, : skip.shape[1], : skip.shape[2]]  # odd encoder sides were padded
            y = jnp.concatenate([y, skip.astype(dt)], axis=-1)
            c = skip.shape[-1]
            y = nn.Dense(c, dtype=dt, kernel_init=_init, name=f"concat_back_dim_{3 - i}")(y)
            first = sum(DEPTHS[:i])
            for j in range(DEPTHS[i]):
                y = SwinBlock(
                    heads[i], j % 2 == 1, rates[first + j], dt, name=f"layers_up_{3 - i}_blocks_{j}"
                )(y, train)
            if i > 0:
                y = PatchExpand(2, dt, name=f"layers_up_{3 - i}_upsample")(y)
        y = nn.LayerNorm(1e-5, dtype=dt, name="norm_up")(y)
        y = PatchExpand(4, dt, name="up")(y)[:, :h, :w]
        logits = Conv(self.num_classes, 1, dtype=dt, name="output")(y)
        return logits.astype(jnp.float32), {}
