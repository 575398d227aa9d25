"""SegFormer (Xie et al., 2021): MiT encoder + all-MLP decoder.

Decoder: each stage's features go through a Linear to the decoder width (256 for
B0/B1, 768 for B2-B5), are upsampled (bilinear) to stride 4, concatenated in the
order c4, c3, c2, c1, fused by a 1x1 conv + BN + ReLU, dropped out (p 0.1, whole
channels as the original's Dropout2d) and classified by a 1x1 conv; the stride-4
logits are resized to the input size.

Weights. Module names follow the original NVlabs/mmseg state dict
(`backbone.block1.0.attn.kv.weight`, `decode_head.linear_c4.proj.weight`,
`decode_head.linear_fuse.conv.weight`, `decode_head.linear_fuse.bn.*`,
`decode_head.linear_pred.*`), so those checkpoints, and the ImageNet MiT files
(`patch_embed1.proj.weight`, ... without "backbone."), load through
jaxseg.models.pretrained as they are. HuggingFace transformers files differ in
more than names: they hold the attention's key and value as two Linears where
the original has one fused `kv`. `to_original(state)` recognises them and
rewrites them to the original layout (`hf_to_original`), both the hub layout
(`segformer.encoder.block.0.0.attention.self.key`, `decode_head.linear_c.0`, as
written by transformers < 5 and stored in the hub's nvidia/segformer-* files)
and the in-memory layout of transformers >= 5 (`segformer.stages.0.blocks.0.
attention.k_proj`, `decode_head.linear_projections.0`). The weights load
unchanged; HF itself runs the block and stage LayerNorms at torch's default eps
1e-5 where the original (and this module) uses 1e-6.
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.layers import Conv, batch_norm, resize
from jaxseg.models.mit import MixVisionTransformer, check_backbone
from jaxseg.models.table import register

DECODER_DIMS = {
    "mit_b0": 256,
    "mit_b1": 256,
    "mit_b2": 768,
    "mit_b3": 768,
    "mit_b4": 768,
    "mit_b5": 768,
}


class _MLP(nn.Module):
    """Linear projection named "proj" as the original's MLP module. [B,h,w,C] -> [B,h,w,dim]."""

    dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.initializers.truncated_normal(0.02)
        return nn.Dense(self.dim, dtype=self.dtype, kernel_init=init, name="proj")(x)


class _ConvModule(nn.Module):
    """mmcv's ConvModule: 1x1 conv (no bias) "conv" + BN "bn" + ReLU."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = Conv(self.features, 1, dtype=self.dtype, name="conv")(x)
        return nn.relu(batch_norm(train, self.dtype, name="bn")(x))


class SegFormerHead(nn.Module):
    """All-MLP decoder. features (strides 4..32) -> stride-4 logits [B,h1,w1,num_classes]."""

    num_classes: int
    dim: int = 256
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: list[jax.Array], train: bool) -> jax.Array:
        size = features[0].shape[1:3]
        projected = [
            resize(_MLP(self.dim, self.dtype, name=f"linear_c{i + 1}")(f), size)
            for i, f in enumerate(features)
        ]
        x = _ConvModule(self.dim, self.dtype, name="linear_fuse")(
            jnp.concatenate(projected[::-1], axis=-1), train
        )
        # The original's Dropout2d: one draw per (sample, channel).
        x = nn.Dropout(0.1, broadcast_dims=(1, 2), deterministic=not train)(x)
        init = nn.initializers.normal(0.01)
        return Conv(
            self.num_classes,
            1,
            use_bias=True,
            dtype=self.dtype,
            kernel_init=init,
            name="linear_pred",
        )(x)


@register("segformer")
class SegFormer(nn.Module):
    """x f32[B,H,W,3] (any H, W >= 29) -> (logits f32[B,H,W,num_classes], {}).

    backbone: "mit_b0".."mit_b5". Weights: see the module docstring;
    pretrained.load_pretrained applies `adapt_state_dict`, so HuggingFace files load too.
    """

    num_classes: int
    backbone: str = "mit_b0"
    dtype: Any = jnp.float32

    @staticmethod
    def adapt_state_dict(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return to_original(state)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        check_backbone(self.backbone)
        features = MixVisionTransformer(self.backbone, dtype=self.dtype, name="backbone")(x, train)
        logits = SegFormerHead(
            self.num_classes, DECODER_DIMS[self.backbone], self.dtype, name="decode_head"
        )(list(features.values()), train)
        return resize(logits.astype(jnp.float32), x.shape[1:3]), {}


# --- HuggingFace state dicts -----------------------------------------------------------------

# transformers >= 5 renames the modules in memory (its loader renames hub files on the fly);
# map those names back to the hub's first.
_HF5_TO_HUB = (
    (r"\bstages\.(\d+)\.patch_embeddings\.", r"encoder.patch_embeddings.\1."),
    (r"\bstages\.(\d+)\.blocks\.", r"encoder.block.\1."),
    (r"\bstages\.(\d+)\.layer_norm\.", r"encoder.layer_norm.\1."),
    (r"\.attention\.q_proj\.", ".attention.self.query."),
    (r"\.attention\.k_proj\.", ".attention.self.key."),
    (r"\.attention\.v_proj\.", ".attention.self.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.attention\.sequence_reduction\.sequence_reduction\.", ".attention.self.sr."),
    (r"\.attention\.sequence_reduction\.layer_norm\.", ".attention.self.layer_norm."),
    (r"\.layernorm_before\.", ".layer_norm_1."),
    (r"\.layernorm_after\.", ".layer_norm_2."),
    (r"\.mlp\.fc1\.", ".mlp.dense1."),
    (r"\.mlp\.fc2\.", ".mlp.dense2."),
    (r"^decode_head\.linear_projections\.", "decode_head.linear_c."),
)

# Hub names -> original names. "{0}" is the first index + 1 (HF counts stages from 0, the
# original from 1), "{1}" the second index. Keys and values become attn.k / attn.v, then kv.
_ENC = r"^(?:segformer\.)?encoder\."
_HUB_TO_ORIGINAL = (
    (_ENC + r"patch_embeddings\.(\d+)\.proj\.", "backbone.patch_embed{0}.proj."),
    (_ENC + r"patch_embeddings\.(\d+)\.layer_norm\.", "backbone.patch_embed{0}.norm."),
    (_ENC + r"block\.(\d+)\.(\d+)\.", "backbone.block{0}.{1}."),
    (_ENC + r"layer_norm\.(\d+)\.", "backbone.norm{0}."),
    (r"\.layer_norm_1\.", ".norm1."),
    (r"\.layer_norm_2\.", ".norm2."),
    (r"\.attention\.self\.query\.", ".attn.q."),
    (r"\.attention\.self\.key\.", ".attn.k."),
    (r"\.attention\.self\.value\.", ".attn.v."),
    (r"\.attention\.self\.sr\.", ".attn.sr."),
    (r"\.attention\.self\.layer_norm\.", ".attn.norm."),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.mlp\.dense1\.", ".mlp.fc1."),
    (r"\.mlp\.dense2\.", ".mlp.fc2."),
    (r"^decode_head\.linear_c\.(\d+)\.", "decode_head.linear_c{0}."),
    (r"^decode_head\.linear_fuse\.", "decode_head.linear_fuse.conv."),
    (r"^decode_head\.batch_norm\.", "decode_head.linear_fuse.bn."),
    (r"^decode_head\.classifier\.", "decode_head.linear_pred."),
)


def is_hf_state_dict(state: dict) -> bool:
    """True for a transformers Segformer* state dict (either layout)."""
    hf = re.compile(
        r"(^|\.)(patch_embeddings|stages\.\d+\.blocks|linear_projections|linear_c\.\d)\."
    )
    return any(hf.search(k) for k in state)


def _rename(key: str) -> str:
    for pattern, replacement in _HF5_TO_HUB:
        key = re.sub(pattern, replacement, key)
    for pattern, template in _HUB_TO_ORIGINAL:
        key = re.sub(
            pattern,
            lambda m, t=template: t.format(
                *(str(int(g) + 1) for g in m.groups()[:1]), *m.groups()[1:]
            ),
            key,
        )
    return key


def hf_to_original(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rewrites a HuggingFace SegFormer state dict into the original NVlabs key layout.

    Renames every key (keys it does not know, e.g. an ImageNet "classifier.*", pass
    through) and concatenates each block's key and value Linears along the output
    axis into the original's fused kv ([2C, C] weight, [2C] bias; keys first, as the
    original splits kv). Arrays keep their PyTorch layout; pretrained.convert_state_dict
    transposes them afterwards.
    """
    renamed = {_rename(k): v for k, v in state.items()}
    out = {}
    for key, value in renamed.items():
        kv = re.fullmatch(r"(.*\.attn\.)([kv])\.(weight|bias)", key)
        if kv is None:
            out[key] = value
            continue
        k, v = (f"{kv[1]}{n}.{kv[3]}" for n in "kv")
        if k not in renamed or v not in renamed:
            raise ValueError(f"HuggingFace state dict: {key} without its key/value partner")
        out[f"{kv[1]}kv.{kv[3]}"] = np.concatenate([renamed[k], renamed[v]], axis=0)
    return out


def to_original(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """hf_to_original(state) for a HuggingFace state dict, else state unchanged."""
    return hf_to_original(state) if is_hf_state_dict(state) else state
