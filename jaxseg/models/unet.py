"""U-Net (Ronneberger et al., 2015) with BatchNorm, as in the common PyTorch ports.

depth down-sampling steps (max-pool 2x2) each followed by a double 3x3 conv
(conv + BN + ReLU, twice); the up path mirrors it: up_mode="transpose" (the paper's
"up-convolution") is a 2x2 stride-2 transposed convolution that halves the channels,
up_mode="bilinear" a bilinear 2x resize followed by a 1x1 convolution that halves them;
then concatenation with the skip and a double conv.

Weights: `UNet.adapt_state_dict` reads milesial/Pytorch-UNet's state dicts (bilinear=False:
inc, down1..down4, up1..up4, outc); other files load by the Flax names.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.layers import ConvTranspose2x2, resize
from jaxseg.models.table import register


class DoubleConv(nn.Module):
    """(3x3 conv -> BN -> ReLU) x 2. x: [B,H,W,C] -> [B,H,W,features]."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for _ in range(2):
            x = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, dtype=self.dtype)(x)
            x = nn.BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
            )(x)
            x = nn.relu(x)
        return x


@register("unet")
class UNet(nn.Module):
    """x: f32[B,H,W,C] (any H, W) -> (logits f32[B,H,W,num_classes], aux {})."""

    num_classes: int
    base_width: int = 64
    depth: int = 4
    up_mode: str = "transpose"  # transpose | bilinear
    transpose_impl: str = "depth_to_space"  # or plain: the same 2x2 transposed conv
    dtype: jnp.dtype = jnp.float32

    @staticmethod
    def adapt_state_dict(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """milesial/Pytorch-UNet keys -> ours (a file without "inc." keys passes unchanged).

        inc -> DoubleConv.0, downK.maxpool_conv.1 -> DoubleConv.K, upK.conv ->
        DoubleConv.(depth+K), upK.up -> ConvTranspose2x2.(K-1), outc.conv -> Conv.0; inside a
        double conv, Sequential items 0, 1, 3, 4 -> Conv.0, BatchNorm.0, Conv.1, BatchNorm.1.
        Their convs before BatchNorm carry a bias b, ours none: BN(y + b) with running mean m
        is BN(y) with mean m - b (in training the batch mean absorbs b), so b folds into the mean.
        """
        if not any(k.startswith("inc.") for k in state):
            return state
        depth = sum(
            bool(re.fullmatch(r"down\d+\.maxpool_conv\.1\.double_conv\.0\.weight", k))
            for k in state
        )
        prefixes = {"inc": "DoubleConv.0", "outc.conv": "Conv.0"}
        for k in range(1, depth + 1):
            prefixes[f"down{k}.maxpool_conv.1"] = f"DoubleConv.{k}"
            prefixes[f"up{k}.conv"] = f"DoubleConv.{depth + k}"
            prefixes[f"up{k}.up"] = f"ConvTranspose2x2.{k - 1}"
        inner = {"0": "Conv.0", "1": "BatchNorm.0", "3": "Conv.1", "4": "BatchNorm.1"}
        out = {}
        for key, value in state.items():
            m = re.fullmatch(r"(.+)\.double_conv\.(\d)\.(\w+)", key)
            prefix, leaf = (m.group(1), m.group(3)) if m else key.rpartition(".")[::2]
            if prefix not in prefixes or (m and m.group(2) not in inner):
                out[key] = value  # left for the loader to report as unused
                continue
            out[".".join([prefixes[prefix], *([inner[m.group(2)]] if m else []), leaf])] = value
        for key in [k for k in out if re.fullmatch(r"DoubleConv\.\d+\.Conv\.\d\.bias", k)]:
            mean = key.replace(".Conv.", ".BatchNorm.").replace(".bias", ".running_mean")
            out[mean] = out[mean] - out.pop(key)
        return out

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        if self.up_mode not in ("transpose", "bilinear"):
            raise ValueError(f"up_mode={self.up_mode!r}; valid: transpose, bilinear")
        height, width = x.shape[1:3]
        multiple = 2**self.depth
        pad_h, pad_w = -height % multiple, -width % multiple
        # Pad inside and crop back, so sides need not be multiples of 2**depth.
        x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0))).astype(self.dtype)

        skips = []
        for level in range(self.depth):
            x = DoubleConv(self.base_width * 2**level, self.dtype)(x, train)
            skips.append(x)
            x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = DoubleConv(self.base_width * 2**self.depth, self.dtype)(x, train)
        for level in reversed(range(self.depth)):
            features = self.base_width * 2**level
            if self.up_mode == "transpose":
                x = ConvTranspose2x2(
                    features, transpose_impl=self.transpose_impl, dtype=self.dtype
                )(x)
            else:
                x = resize(x, (2 * x.shape[1], 2 * x.shape[2]))
                x = nn.Conv(features, (1, 1), dtype=self.dtype)(x)
            x = jnp.concatenate([skips[level], x], axis=-1)
            x = DoubleConv(features, self.dtype)(x, train)
        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype)(x)
        return logits[:, :height, :width].astype(jnp.float32), {}
