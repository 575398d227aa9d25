"""SETR (Zheng et al., CVPR 2021): a plain ViT encoder under one of three decoders, as
mmsegmentation's SETR configs build them.

- naive: LayerNorm on the last tokens, 1x1 conv to 256 + BN + ReLU, 4x bilinear
  upsampling, 1x1 classifier (mmseg SETRUPHead, num_convs 1, kernel 1, up_scale 4).
- pup (progressive upsampling): LayerNorm, then four times a 3x3 conv to 256 + BN + ReLU
  and 2x bilinear upsampling, 1x1 classifier (SETRUPHead, num_convs 4, kernel 3).
- mla (multi-level aggregation): four blocks' tokens (ViT-L 5, 11, 17, 23), each
  LayerNormed and projected 1x1 to 256 (+ BN + ReLU), summed top-down, a 3x3 conv
  (+ BN + ReLU) each (MLANeck); per level two 3x3 convs to 128 (+ BN + ReLU) and 4x
  upsampling, concatenated, 1x1 classifier (SETRMLAHead).

Encoder as mmseg's SETR configs (and the authors' fudan-zvg/SETR): no final LayerNorm
after the last block (each head normalises its tokens itself), and for mla the class
token is dropped before the blocks (with_cls_token=False); both keep timm's stored layout
apart from the unused final norm, so timm files load (its norm reported unused).

State-dict names: the backbone is timm's; the heads and neck are mmseg's
(`decode_head.up_convs.0.0.conv`, `neck.mla.channel_proj.0.bn`, `auxiliary_head.0.conv_seg`)
through `torch_renames`; tests/test_models_vit.py holds the PyTorch twin.

Auxiliary heads (aux_head=True) as the paper and mmseg: naive and pup put a head of
their own kind on blocks 9, 14 and 19 of ViT-L ("aux0".."aux2"; naive one 1x1 conv,
pup two 3x3 convs), mla a 1x1 classifier on each of the four aggregated levels
("aux0".."aux3"). ViT-B uses blocks 4, 7, 9 (naive, pup) and 2, 5, 8, 11 (mla), the same
depths scaled to 12 blocks.

Counts against the paper's reported figures (Cityscapes, 19 classes, 768x768 crops, so
48x48 position embeddings: pretrain_size=768): tests/test_models_vit.py.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.layers import Conv, ConvBN, resize, torch_default_init
from jaxseg.models.table import register
from jaxseg.models.vit import VARIANTS, VisionTransformer, check_backbone

DECODERS = ("naive", "pup", "mla")
# Blocks whose tokens feed the auxiliary heads (naive, pup) or the MLA neck, by depth.
AUX_BLOCKS = {24: (9, 14, 19), 12: (4, 7, 9)}
MLA_BLOCKS = {24: (5, 11, 17, 23), 12: (2, 5, 8, 11)}


def _upsample(x: jax.Array, factor: int) -> jax.Array:
    return resize(x, (x.shape[1] * factor, x.shape[2] * factor))


def _classifier(num_classes: int, dtype: Any, name: str) -> Conv:
    return Conv(
        num_classes, 1, use_bias=True, dtype=dtype, kernel_init=torch_default_init, name=name
    )


class UpHead(nn.Module):
    """mmseg SETRUPHead: LayerNorm (eps 1e-6), num_convs x (k x k conv + BN + ReLU, then
    up_scale x bilinear), 1x1 classifier. x [B,h,w,C] -> [B,h*s,w*s,num_classes],
    s = up_scale ** num_convs."""

    num_classes: int
    num_convs: int
    kernel_size: int
    up_scale: int
    channels: int = 256
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.LayerNorm(1e-6, dtype=self.dtype, name="norm")(x)
        for i in range(self.num_convs):
            x = ConvBN(self.channels, self.kernel_size, dtype=self.dtype, name=f"up_convs_{i}")(
                x, train
            )
            x = _upsample(x, self.up_scale)
        return _classifier(self.num_classes, self.dtype, "conv_seg")(x)


class MLANeck(nn.Module):
    """mmseg MLANeck: per level LayerNorm + 1x1 conv to 256 (+ BN + ReLU); running sums from
    the deepest level; a 3x3 conv (+ BN + ReLU) on each sum. 4 x [B,h,w,C] ->
    4 x [B,h,w,256], deepest first (mmseg's order)."""

    channels: int = 256
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, levels: list[jax.Array], train: bool) -> list[jax.Array]:
        dt = self.dtype
        projected = [
            ConvBN(self.channels, 1, dtype=dt, name=f"channel_proj_{i}")(
                nn.LayerNorm(1e-6, dtype=dt, name=f"norm_{i}")(x), train
            )
            for i, x in enumerate(levels)
        ]
        sums = [projected[-1]]
        for x in projected[-2::-1]:
            sums.append(sums[-1] + x)
        return [
            ConvBN(self.channels, 3, dtype=dt, name=f"feat_extract_{i}")(x, train)
            for i, x in enumerate(sums)
        ]


class MLAHead(nn.Module):
    """mmseg SETRMLAHead: per level two 3x3 convs to 128 (+ BN + ReLU) and 4x upsampling;
    concatenated; 1x1 classifier. 4 x [B,h,w,256] -> [B,4h,4w,num_classes]."""

    num_classes: int
    mla_channels: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, levels: list[jax.Array], train: bool) -> jax.Array:
        outs = []
        for i, x in enumerate(levels):
            for j in range(2):
                x = ConvBN(self.mla_channels, 3, dtype=self.dtype, name=f"up_convs_{i}_{j}")(
                    x, train
                )
            outs.append(_upsample(x, 4))
        return _classifier(self.num_classes, self.dtype, "conv_seg")(jnp.concatenate(outs, -1))


@register("setr")
class SETR(nn.Module):
    """x f32[B,H,W,3] (any H, W; padded to multiples of 16 inside) ->
    (logits f32[B,H,W,num_classes], aux {"aux0", ...: f32[B,H,W,num_classes]} when
    aux_head). The heads run on the padded image's tokens; their outputs are scaled to the
    padded size and cropped, so a pixel's logits never mix in the padding's geometry.

    backbone: vit_b16 or vit_l16 (vit_ti16 for tests); decoder: naive, pup or mla;
    pretrain_size: the image side the position embeddings are stored for (timm's 224 or
    384 files; the paper's Cityscapes models 768). Dropout 0.1 in the encoder as the paper.
    """

    num_classes: int
    backbone: str = "vit_l16"
    decoder: str = "pup"
    aux_head: bool = False
    pretrain_size: int = 224
    dtype: Any = jnp.float32

    # Flax path -> mmseg key: SETRUPHead's up_convs are (ConvModule, Upsample) pairs, the
    # MLA neck's convs sit in its `mla` module, an FCNHead without convs is its conv_seg.
    torch_renames: ClassVar[tuple[tuple[str, str], ...]] = (
        (r"\.up_convs\.(\d+)\.(conv|bn)\.", r".up_convs.\1.0.\2."),
        (r"^neck\.(channel_proj|feat_extract)\.", r"neck.mla.\1."),
        (r"^auxiliary_head\.(\d+)\.(weight|bias)$", r"auxiliary_head.\1.conv_seg.\2"),
    )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        check_backbone(self.backbone)
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder={self.decoder!r}; valid: {', '.join(DECODERS)}")
        h, w = x.shape[1:3]
        feats = VisionTransformer(
            self.backbone,
            self.pretrain_size,
            drop_class_token=self.decoder == "mla",
            final_norm=False,
            dropout_rate=0.1,
            dtype=self.dtype,
            name="backbone",
        )(x, train)
        depth, k, dt = VARIANTS[self.backbone][1], self.num_classes, self.dtype
        aux = {}
        if self.decoder == "mla":
            levels = [feats[f"block{i}"] for i in MLA_BLOCKS[depth]]
            levels = MLANeck(dtype=dt, name="neck")(levels, train)
            logits = MLAHead(k, dtype=dt, name="decode_head")(levels, train)
            if self.aux_head:
                for i, level in enumerate(levels):
                    aux[f"aux{i}"] = _classifier(k, dt, f"auxiliary_head_{i}")(level)
        else:
            convs, kernel, up = (1, 1, 4) if self.decoder == "naive" else (4, 3, 2)
            logits = UpHead(k, convs, kernel, up, dtype=dt, name="decode_head")(
                feats[f"block{depth - 1}"], train
            )
            if self.aux_head:
                aux_convs = 1 if self.decoder == "naive" else 2
                for i, block in enumerate(AUX_BLOCKS[depth]):
                    head = UpHead(k, aux_convs, kernel, up, dtype=dt, name=f"auxiliary_head_{i}")
                    aux[f"aux{i}"] = head(feats[f"block{block}"], train)
        # The heads see the padded image: scale to its size, then crop the padding off.
        ph, pw = -(-h // 16) * 16, -(-w // 16) * 16

        def crop(y):
            return resize(y.astype(jnp.float32), (ph, pw))[:, :h, :w]

        return crop(logits), {n: crop(a) for n, a in aux.items()}
