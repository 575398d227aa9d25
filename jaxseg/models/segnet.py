"""SegNet (Badrinarayanan, Kendall & Cipolla, TPAMI 2017).

Encoder: the 13 convolutions of VGG16 with BatchNorm (torchvision's vgg16_bn
`features`, under "backbone", so its ImageNet weights load), each 2x2 max-pool
recording the position of its maximum. Decoder: per block, from the deepest up,
max-unpooling with that block's positions (a sparse map, zeros elsewhere), then
3x3 conv + BN + ReLU stacks that mirror the encoder; the last conv maps 64
channels to the classes, without BN or ReLU (the paper's classifier).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models import layers
from jaxseg.models.table import register
from jaxseg.models.vgg import VGG16

# Output widths of the decoder convs for blocks 5..1; the last one is the classifier.
DECODER_WIDTHS = ((512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64, None))


@register("segnet")
class SegNet(nn.Module):
    """x f32[B,H,W,3] (any H, W: padded to a multiple of 32 inside, logits cropped back)
    -> (logits f32[B,H,W,num_classes], {}).

    unpool_impl picks layers.max_unpool's formulation ("mask_repeat" or "scatter"),
    the same function either way. Decoder names: "decoder{block}_{i}" with i
    counting conv, BN, ReLU as an nn.Sequential would (conv 0, BN 1, conv 3, ...).
    """

    num_classes: int
    unpool_impl: str = "mask_repeat"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        if self.unpool_impl not in layers.UNPOOL_IMPLS:
            raise ValueError(
                f"unpool_impl={self.unpool_impl!r}; valid: {', '.join(layers.UNPOOL_IMPLS)}"
            )
        dt = self.dtype
        height, width = x.shape[1:3]
        x = jnp.pad(x, ((0, 0), (0, -height % 32), (0, -width % 32), (0, 0)))
        feats = VGG16(batch_norm=True, with_argmax=True, dtype=dt, name="backbone")(x, train)
        y = feats["pool5"]
        for block, widths in zip(range(5, 0, -1), DECODER_WIDTHS, strict=True):
            y = layers.max_unpool(y, feats[f"argmax{block}"], self.unpool_impl)
            for i, features in enumerate(widths):
                name = f"decoder{block}_{3 * i}"
                if features is None:  # the classifier
                    y = layers.Conv(
                        self.num_classes,
                        3,
                        use_bias=True,
                        kernel_init=layers.torch_default_init,
                        dtype=dt,
                        name=name,
                    )(y)
                    break
                y = layers.Conv(features, 3, use_bias=True, dtype=dt, name=name)(y)
                y = layers.batch_norm(train, dt, name=f"decoder{block}_{3 * i + 1}")(y)
                y = nn.relu(y)
        return y[:, :height, :width].astype(jnp.float32), {}
