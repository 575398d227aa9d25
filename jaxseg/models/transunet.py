"""TransUNet (Chen et al., 2021): an R50+ViT-B/16 hybrid encoder under a cascaded
upsampler with skip connections, as the official code (Beckschen/TransUNet,
vit_seg_modeling.py, config R50-ViT-B_16, n_skip 3).

Encoder: ResNet-50's first three stages (3, 4, 9 blocks; weight-standardised convs and
GroupNorm) to stride 16, a 1x1 patch projection to 768, twelve ViT-B blocks (dropout
0.1), a final LayerNorm; no class token. Laid out as timm's vit_base_r50_s16_384
(`patch_embed.backbone.stem.conv`, `patch_embed.backbone.stages.0.blocks.0.conv1`, ...,
`blocks.0.attn.qkv`), so timm's file loads: its class token is dropped and so is the
class token's position (`adapt_state_dict`); its 384x384 position grid needs
pretrain_size=384. Numerics follow timm's hybrid (torch-style symmetric padding as its
padding_same=False, GroupNorm eps 1e-5, standardisation eps 1e-8); the official code uses
eps 1e-6 and 1e-5 and an unpadded max-pool whose odd outputs it pads back to size.

Decoder ("DecoderCup"): 3x3 conv 768 -> 512 + BN + ReLU ("conv_more"); four blocks, each
2x bilinear upsampling, concatenation with the CNN feature at that stride (stride 8: 512,
4: 256, 2: 64 channels; none at stride 1) and two 3x3 conv + BN + ReLU, to 256, 128, 64,
16 channels; a 3x3 classifier ("segmentation_head"). The official code upsamples with
align_corners=True; this uses the library's half-pixel bilinear. The decoder's weights
load under the official names (`decoder.conv_more.0`, `decoder.blocks.0.conv1.1`,
`segmentation_head.0`; the encoder's stay timm's): tests/test_models_vit.py's twin.

About 105 M parameters (paper: 105.28 M; tests/test_models_vit.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.layers import Conv, ConvBN, resize
from jaxseg.models.table import register
from jaxseg.models.vit import TORCH_RENAMES, VisionTransformer

DECODER_CHANNELS = (256, 128, 64, 16)
SKIPS = ("stage2", "stage1", "stem")  # CNN features at strides 8, 4, 2


class DecoderBlock(nn.Module):
    """2x bilinear up, concat skip, two 3x3 conv + BN + ReLU ("conv1", "conv2").
    [B,h,w,Cin] (+ skip [B,2h,2w,Cs]) -> [B,2h,2w,features]."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, skip: jax.Array | None, train: bool) -> jax.Array:
        size = skip.shape[1:3] if skip is not None else (2 * x.shape[1], 2 * x.shape[2])
        x = resize(x, size)
        if skip is not None:
            x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
        x = ConvBN(self.features, 3, dtype=self.dtype, name="conv1")(x, train)
        return ConvBN(self.features, 3, dtype=self.dtype, name="conv2")(x, train)


@register("transunet")
class TransUNet(nn.Module):
    """x f32[B,H,W,3] (any H, W; padded to multiples of 16 inside) ->
    (logits f32[B,H,W,num_classes], {}).

    backbone: vit_b16 (the paper's R50-ViT-B/16; vit_ti16 for tests). pretrain_size: the
    image side the position embeddings are stored for (the paper trains at 224)."""

    num_classes: int
    backbone: str = "vit_b16"
    pretrain_size: int = 224
    dtype: Any = jnp.float32

    # The decoder under the official code's names (vit_seg_modeling.py's DecoderCup as
    # `decoder`, Conv2dReLU = Sequential(conv, bn, relu), SegmentationHead = (conv, up)).
    torch_renames: ClassVar[tuple[tuple[str, str], ...]] = (
        *TORCH_RENAMES,
        (r"^(conv_more|blocks\.\d+\.conv[12])\.conv\.", r"decoder.\1.0."),
        (r"^(conv_more|blocks\.\d+\.conv[12])\.bn\.", r"decoder.\1.1."),
        (r"^segmentation_head\.", "segmentation_head.0."),
    )

    @staticmethod
    def adapt_state_dict(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """timm's hybrid file: drop the class token and its position (the first row)."""
        state = {k: v for k, v in state.items() if k != "cls_token"}
        pos = state.get("pos_embed")
        if pos is not None and int(np.sqrt(pos.shape[1] - 1)) ** 2 == pos.shape[1] - 1:
            state["pos_embed"] = pos[:, 1:]
        return state

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        h, w = x.shape[1:3]
        dt = self.dtype
        feats = VisionTransformer(
            self.backbone,
            self.pretrain_size,
            hybrid=True,
            class_token=False,
            dropout_rate=0.1,
            dtype=dt,
            name="backbone",
        )(x, train)
        y = ConvBN(512, 3, dtype=dt, name="conv_more")(feats["norm"], train)
        for i, channels in enumerate(DECODER_CHANNELS):
            skip = feats[SKIPS[i]] if i < len(SKIPS) else None
            y = DecoderBlock(channels, dt, name=f"blocks_{i}")(y, skip, train)
        logits = Conv(self.num_classes, 3, use_bias=True, dtype=dt, name="segmentation_head")(y)
        return logits[:, :h, :w].astype(jnp.float32), {}
