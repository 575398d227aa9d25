"""FCN-32s / FCN-16s / FCN-8s on VGG16 (Long, Shelhamer & Darrell, CVPR 2015).

The original Caffe nets pad the input by 100 pixels, run fc6 as an unpadded 7x7
conv and crop every skip and the logits by hand-computed offsets. Here instead:

- the input is zero-padded (bottom/right) to a multiple of 32, so pool3, pool4 and
  pool5 are exactly H/8, H/16, H/32 of the padded size;
- fc6 is a 7x7 conv with padding 3 (same size as pool5);
- every upsampling is a transposed conv with kernel 2f, stride f and padding f/2
  (torch's ConvTranspose2d convention): its output is exactly f times its input,
  and at its bilinear initialisation it equals bilinear resizing with
  align_corners=False (pixel centres map to pixel centres), so a 2x-upsampled
  score map lines up with the next skip without any crop;
- the logits are cropped back to the input size.

fc6 / fc7 keep their weights in torchvision's Linear layout (kernel [Cin*7*7, 4096]
and [4096, 4096]) and are reshaped into convolutions when applied; torch_renames maps
them to "classifier.0" / "classifier.3", so an ImageNet torchvision vgg16 state dict
loads the 13 convs, fc6 and fc7 (its 1000-way classifier.6 stays unused), as the
paper's "convolutionalised" VGG16. The scoring layers start at zero and the
upsamplings at bilinear interpolation, as in the paper; all are learnable.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxseg.models import layers
from jaxseg.models.table import register
from jaxseg.models.vgg import VGG16

OUTPUT_STRIDES = (8, 16, 32)
_DIMS = ("NHWC", "HWIO", "NHWC")


def bilinear_kernel(factor: int, cin: int, cout: int) -> np.ndarray:
    """f32[2f,2f,cin,cout]: bilinear interpolation weights on the channel diagonal
    (as FCN's surgery.interp), zero between different channels."""
    size = 2 * factor
    centre = factor - 0.5
    taps = 1 - np.abs(np.arange(size) - centre) / factor
    kernel = np.zeros((size, size, cin, cout), np.float32)
    channels = np.arange(min(cin, cout))
    kernel[:, :, channels, channels] = np.outer(taps, taps)[:, :, None]
    return kernel


class BilinearUpsample(nn.Module):
    """Learnable factor-f upsampling: x [B,h,w,Cin] -> [B,f*h,f*w,features].

    A transposed conv, kernel 2f, stride f, padding f/2, no bias, initialised to
    bilinear interpolation. The kernel [2f,2f,Cin,features] follows
    flax.linen.ConvTranspose (a torch ConvTranspose2d weight w [Cin,Cout,k,k] is
    w.transpose(2, 3, 0, 1)[::-1, ::-1], as pretrained.py converts it).
    """

    torch_transposed: ClassVar[bool] = True
    features: int
    factor: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        f, cin = self.factor, x.shape[-1]
        if f % 2:
            raise ValueError(f"BilinearUpsample needs an even factor, got {f}")
        kernel = self.param(
            "kernel",
            lambda key, shape: jnp.asarray(bilinear_kernel(f, cin, self.features)),
            (2 * f, 2 * f, cin, self.features),
        )
        # Padding of the zero-dilated input that gives torch's padding f/2: 2f - 1 - f/2.
        pad = 2 * f - 1 - f // 2
        return lax.conv_transpose(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            (f, f),
            ((pad, pad), (pad, pad)),
            dimension_numbers=_DIMS,
        )


class LinearAsConv(nn.Module):
    """A fully connected layer over k x k windows, run as a k x k conv (padding k//2).

    x [B,H,W,Cin] -> [B,H,W,features]. The kernel is stored as torch's Linear weight
    transposed, [Cin*k*k, features] with inputs flattened in (C, H, W) order, so a
    torchvision VGG classifier Linear loads without reshaping.
    """

    features: int
    kernel_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, cin = self.kernel_size, x.shape[-1]
        # torchvision's VGG initialises its Linear layers with N(0, 0.01).
        kernel = self.param("kernel", nn.initializers.normal(0.01), (cin * k * k, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        kernel = kernel.reshape(cin, k, k, self.features).transpose(1, 2, 0, 3)
        y = lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            (1, 1),
            ((k // 2, k // 2), (k // 2, k // 2)),
            dimension_numbers=_DIMS,
        )
        return y + bias.astype(self.dtype)


@register("fcn_vgg16")
class FCNVGG16(nn.Module):
    """x f32[B,H,W,3] (any H, W) -> (logits f32[B,H,W,num_classes], {}).

    output_stride 32, 16 or 8 selects FCN-32s, FCN-16s (+ pool4 skip) or FCN-8s
    (+ pool3 skip). Parameter names: "backbone" (VGG16), "fc6", "fc7", "score_fr",
    "upscore2", "score_pool4", "upscore_pool4", "score_pool3", "upscore{8,16,32}".
    """

    num_classes: int
    output_stride: int = 8
    dtype: Any = jnp.float32

    torch_renames: ClassVar[tuple[tuple[str, str], ...]] = (
        (r"^fc6\.", "classifier.0."),
        (r"^fc7\.", "classifier.3."),
    )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(
                f"output_stride={self.output_stride!r}; valid: "
                + ", ".join(map(str, OUTPUT_STRIDES))
            )
        k, dt = self.num_classes, self.dtype
        height, width = x.shape[1:3]
        x = jnp.pad(x, ((0, 0), (0, -height % 32), (0, -width % 32), (0, 0)))
        feats = VGG16(dtype=dt, name="backbone")(x, train)

        def score(name):
            # Zero-initialised, as the paper's new scoring layers.
            return layers.Conv(
                k, 1, use_bias=True, kernel_init=nn.initializers.zeros, dtype=dt, name=name
            )

        y = feats["pool5"]
        for name, size in (("fc6", 7), ("fc7", 1)):
            y = nn.relu(LinearAsConv(4096, size, dtype=dt, name=name)(y))
            y = nn.Dropout(0.5, deterministic=not train)(y)
        y = score("score_fr")(y)
        if self.output_stride <= 16:
            y = BilinearUpsample(k, 2, dtype=dt, name="upscore2")(y)
            y = y + score("score_pool4")(feats["pool4"])
        if self.output_stride == 8:
            y = BilinearUpsample(k, 2, dtype=dt, name="upscore_pool4")(y)
            y = y + score("score_pool3")(feats["pool3"])
        s = self.output_stride
        y = BilinearUpsample(k, s, dtype=dt, name=f"upscore{s}")(y)
        return y[:, :height, :width].astype(jnp.float32), {}
