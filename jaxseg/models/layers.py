"""Building blocks shared by the model families, with PyTorch-compatible numerics.

Conv pads symmetrically like torch.nn.Conv2d (Flax's "SAME" pads stride-2
convolutions asymmetrically, which would break weight import). The alternative
formulations the fast paths need live here, each computing the same function
as its plain twin (tests/test_layers.py pins that):

- dilated conv as space-to-batch + conv + batch-to-space (atrous_impl);
- 2x2 stride-2 transposed conv as 1x1 conv + depth-to-space (transpose_impl);
- 3x3 stride-2 transposed conv as one 2x2 conv to four phases + depth-to-space;
- max-unpooling as mask-and-repeat instead of a scatter (unpool_impl).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ATROUS_IMPLS = ("plain", "space_to_batch")
TRANSPOSE_IMPLS = ("plain", "depth_to_space")
UNPOOL_IMPLS = ("scatter", "mask_repeat")

# torchvision's ResNet/VGG init: He normal over fan_out.
he_normal = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Conv2d's own init (kaiming_uniform, a=sqrt(5)): U(+-1/sqrt(fan_in)). torchvision
# leaves its heads at it; for classifiers it keeps initial logits small (He over a fan_out
# of a few classes would make them ~10x larger and slow early training).
torch_default_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
_DIMS = ("NHWC", "HWIO", "NHWC")


def _check(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r}; valid: {', '.join(valid)}")


def batch_norm(train: bool, dtype: Any = jnp.float32, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5)."""
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name
    )


def space_to_batch(x: jax.Array, rate: int) -> jax.Array:
    """[B,H,W,C] (H, W multiples of rate) -> [rate*rate*B, H/rate, W/rate, C]."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // rate, rate, w // rate, rate, c)
    return x.transpose(2, 4, 0, 1, 3, 5).reshape(rate * rate * b, h // rate, w // rate, c)


def batch_to_space(x: jax.Array, rate: int) -> jax.Array:
    """Inverse of space_to_batch."""
    rb, h, w, c = x.shape
    b = rb // (rate * rate)
    x = x.reshape(rate, rate, b, h, w, c).transpose(2, 3, 0, 4, 1, 5)
    return x.reshape(b, h * rate, w * rate, c)


class Conv(nn.Module):
    """torch.nn.Conv2d in NHWC: x [B,H,W,Cin] -> [B,H',W',features].

    padding defaults to dilation * (kernel - 1) // 2 on every side, as torch's
    usual `padding=k // 2 * d`. Params: kernel [k,k,Cin/groups,features], bias.
    atrous_impl="space_to_batch" runs a stride-1 dilated conv as an undilated
    conv over rate*rate sub-images: same function, no zero-inserted kernel.
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    padding: int | None = None
    use_bias: bool = False
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32
    kernel_init: Any = he_normal

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check("atrous_impl", self.atrous_impl, ATROUS_IMPLS)
        k, d = self.kernel_size, self.dilation
        cin = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (k, k, cin // self.groups, self.features))
        pad = d * (k - 1) // 2 if self.padding is None else self.padding
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        conv = functools.partial(
            lax.conv_general_dilated,
            window_strides=(self.stride, self.stride),
            dimension_numbers=_DIMS,
            feature_group_count=self.groups,
        )
        same = self.stride == 1 and 2 * pad == d * (k - 1)
        h, w = x.shape[1:3]
        if d > 1 and same and d >= min(h, w):
            # A side no longer than the dilation: along it, every tap but the centre reads
            # padding for every output (ASPP's rates 12-36 on the 8x8 maps of small inputs),
            # so the centre row or column of the kernel is the same function. XLA's CPU
            # convolution still computed the zeros: deeplabv3 at 64x64 took 6 s a step.
            c = (k - 1) // 2
            rows, cols = d >= h, d >= w
            kernel = kernel[c : c + 1] if rows else kernel
            kernel = kernel[:, c : c + 1] if cols else kernel
            y = conv(
                x,
                kernel,
                padding=((0, 0) if rows else (pad, pad), (0, 0) if cols else (pad, pad)),
                rhs_dilation=(1 if rows else d, 1 if cols else d),
            )
        elif d > 1 and self.atrous_impl == "space_to_batch" and same:
            # Zeros appended to reach a multiple of d are the zeros the plain conv pads with.
            x = jnp.pad(x, ((0, 0), (0, -h % d), (0, -w % d), (0, 0)))
            p = (k - 1) // 2
            y = conv(space_to_batch(x, d), kernel, padding=((p, p), (p, p)))
            y = batch_to_space(y, d)[:, :h, :w]
        else:
            y = conv(x, kernel, padding=((pad, pad), (pad, pad)), rhs_dilation=(d, d))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        return y


class ConvBN(nn.Module):
    """Conv ("conv") + BatchNorm ("bn") + optional ReLU: [B,H,W,Cin] -> [B,H',W',features].
    depthwise=True makes it a per-channel conv (features must equal Cin)."""

    features: int
    kernel_size: int = 1
    stride: int = 1
    dilation: int = 1
    depthwise: bool = False
    relu: bool = True
    use_bias: bool = False
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = Conv(
            self.features,
            self.kernel_size,
            stride=self.stride,
            dilation=self.dilation,
            groups=x.shape[-1] if self.depthwise else 1,
            use_bias=self.use_bias,
            atrous_impl=self.atrous_impl,
            dtype=self.dtype,
            name="conv",
        )(x)
        x = batch_norm(train, self.dtype, name="bn")(x)
        return nn.relu(x) if self.relu else x


class ConvTranspose2x2(nn.Module):
    """2x2 stride-2 transposed conv: x [B,H,W,Cin] -> [B,2H,2W,features].

    Params as flax.linen.ConvTranspose (kernel [2,2,Cin,features], bias).
    transpose_impl="depth_to_space" computes the same output as one matmul to
    4*features channels and a depth-to-space shuffle: the stride equals the
    kernel, so output windows never overlap.
    """

    torch_transposed: ClassVar[bool] = True  # pretrained.py: ConvTranspose2d's layout
    features: int
    use_bias: bool = True
    transpose_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check("transpose_impl", self.transpose_impl, TRANSPOSE_IMPLS)
        cin = x.shape[-1]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (2, 2, cin, self.features)
        ).astype(self.dtype)
        x = x.astype(self.dtype)
        if self.transpose_impl == "plain":
            y = lax.conv_transpose(x, kernel, (2, 2), "VALID", dimension_numbers=_DIMS)
        else:
            b, h, w, _ = x.shape
            # lax.conv_transpose (as flax's ConvTranspose) writes kernel tap (1-i, 1-j) to
            # output offset (i, j), hence the flip.
            y = jnp.einsum("bhwc,ijco->bhiwjo", x, kernel[::-1, ::-1])
            y = y.reshape(b, 2 * h, 2 * w, self.features)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        return y


class ConvTranspose3x3(nn.Module):
    """3x3 stride-2 transposed conv without padding, as torch's ConvTranspose2d(k=3, s=2)
    and Lasagne's TransposedConv2DLayer(crop="valid"): x [B,h,w,Cin] -> [B,2h+1,2w+1,features].

    Params as flax.linen.ConvTranspose (kernel [3,3,Cin,features], bias).
    transpose_impl="depth_to_space" computes the same output without the zero-inserted
    input: output row 2m takes kernel rows 0 and 2 (inputs m and m-1), row 2m+1 kernel
    row 1 (input m), so one 2x2 conv over the input padded by one gives the four
    (row, column) parity phases as 4*features channels, and a depth-to-space interleaves them.
    """

    torch_transposed: ClassVar[bool] = True  # pretrained.py: ConvTranspose2d's layout
    features: int
    use_bias: bool = True
    transpose_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check("transpose_impl", self.transpose_impl, TRANSPOSE_IMPLS)
        cin, f = x.shape[-1], self.features
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, cin, f)).astype(
            self.dtype
        )
        x = x.astype(self.dtype)
        b, h, w, _ = x.shape
        if self.transpose_impl == "plain":
            y = lax.conv_transpose(x, kernel, (2, 2), "VALID", dimension_numbers=_DIMS)
        else:
            # lax.conv_transpose writes input i through tap t to output 2i + 2 - t: output
            # 2m gets (i=m, t=2) and (i=m-1, t=0), output 2m+1 gets (i=m, t=1). Over the
            # window (i=m-1, i=m) of the padded input the even phase's taps are (0, 2), the
            # odd phase's (none, 1).
            zero = jnp.zeros_like(kernel[:1])
            per_row = (jnp.stack([kernel[0], kernel[2]]), jnp.concatenate([zero, kernel[1:2]]))
            phases = []
            for rows in per_row:  # [2, 3, Cin, F]: window rows of one row phase
                zc = jnp.zeros_like(rows[:, :1])
                cols = (
                    jnp.stack([rows[:, 0], rows[:, 2]], axis=1),
                    jnp.concatenate([zc, rows[:, 1:2]], axis=1),
                )
                phases.append(jnp.stack(cols, axis=3))  # [2, 2, Cin, 2 col phases, F]
            k2 = jnp.stack(phases, axis=3).reshape(2, 2, cin, 4 * f)  # (row ph, col ph, F)
            x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            y = lax.conv_general_dilated(x, k2, (1, 1), "VALID", dimension_numbers=_DIMS)
            y = y.reshape(b, h + 1, w + 1, 2, 2, f).transpose(0, 1, 3, 2, 4, 5)
            y = y.reshape(b, 2 * h + 2, 2 * w + 2, f)[:, : 2 * h + 1, : 2 * w + 1]
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (f,)).astype(self.dtype)
        return y


def max_pool_with_argmax(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """2x2 stride-2 max-pool. x [B,H,W,C] (H, W even) -> (pooled [B,H/2,W/2,C],
    argmax int32[B,H/2,W/2,C] in 0..3, row-major in the window, first max on ties
    as torch.nn.MaxPool2d(return_indices=True)).

    The pooled value is read at the argmax, so its gradient goes to that one element, as
    torch's and Caffe's; `windows.max(-1)` would split it among tied elements (constant
    regions such as SegNet's zero padding)."""
    b, h, w, c = x.shape
    windows = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    windows = windows.reshape(b, h // 2, w // 2, c, 4)
    argmax = jnp.argmax(windows, axis=-1)
    # A select and a sum, not a gather (gathers/scatters have been slow on GPUs).
    pooled = jnp.where(jnp.arange(4) == argmax[..., None], windows, 0).sum(-1)
    return pooled, argmax.astype(jnp.int32)


def max_unpool(y: jax.Array, argmax: jax.Array, unpool_impl: str = "mask_repeat") -> jax.Array:
    """Inverse of max_pool_with_argmax: y [B,h,w,C] -> [B,2h,2w,C], zeros except at
    each window's argmax. "scatter" writes through flat indices as torch's
    MaxUnpool2d does; "mask_repeat" repeats y and multiplies by a one-hot mask."""
    _check("unpool_impl", unpool_impl, UNPOOL_IMPLS)
    b, h, w, c = y.shape
    if unpool_impl == "mask_repeat":
        mask = jax.nn.one_hot(argmax, 4, dtype=y.dtype).reshape(b, h, w, c, 2, 2)
        out = y[..., None, None] * mask
        return out.transpose(0, 1, 4, 2, 5, 3).reshape(b, 2 * h, 2 * w, c)
    rows = 2 * jnp.arange(h)[None, :, None, None] + argmax // 2
    cols = 2 * jnp.arange(w)[None, None, :, None] + argmax % 2
    flat = (rows * 2 * w + cols).reshape(b, h * w, c)
    out = jnp.zeros((b, 4 * h * w, c), y.dtype)
    out = out.at[jnp.arange(b)[:, None, None], flat, jnp.arange(c)[None, None, :]].set(
        y.reshape(b, h * w, c)
    )
    return out.reshape(b, 2 * h, 2 * w, c)


def resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize of [B,H,W,C] to size, as F.interpolate(mode="bilinear",
    align_corners=False): no antialiasing (jax.image.resize's default would blur
    when shrinking)."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    shape = (x.shape[0], *size, x.shape[3])
    return jax.image.resize(x, shape, "linear", antialias=False).astype(x.dtype)


def adaptive_avg_pool(x: jax.Array, bins: int) -> jax.Array:
    """torch's AdaptiveAvgPool2d(bins): [B,H,W,C] -> [B,bins,bins,C]; bin i covers
    rows floor(i*H/bins) to ceil((i+1)*H/bins), so bins may overlap."""

    def weights(n: int) -> np.ndarray:
        m = np.zeros((bins, n), np.float32)
        for i in range(bins):
            lo, hi = (i * n) // bins, -(-(i + 1) * n // bins)
            m[i, lo:hi] = 1.0 / (hi - lo)
        return m

    h, w = x.shape[1:3]
    wh, ww = jnp.asarray(weights(h), x.dtype), jnp.asarray(weights(w), x.dtype)
    return jnp.einsum("ih,jw,bhwc->bijc", wh, ww, x)


class FCNHead(nn.Module):
    """torchvision's FCNHead: 3x3 conv to Cin/4 + BN + ReLU + dropout 0.1 + 1x1 conv.

    x [B,H,W,Cin] -> [B,H,W,num_classes]; names "0", "1", "4" mirror its nn.Sequential.
    """

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = Conv(x.shape[-1] // 4, 3, dtype=self.dtype, name="0")(x)
        x = nn.relu(batch_norm(train, self.dtype, name="1")(x))
        x = nn.Dropout(0.1, deterministic=not train)(x)
        return Conv(
            self.num_classes,
            1,
            use_bias=True,
            dtype=self.dtype,
            kernel_init=torch_default_init,
            name="4",
        )(x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as torchvision's ASPP (DeepLabV3).

    x [B,H,W,Cin] -> [B,H,W,features]: a 1x1 branch, one 3x3 branch per rate,
    image pooling, concatenation, 1x1 projection and dropout 0.5. separable=True
    makes the 3x3 branches depthwise (names "depthwise"/"pointwise") as DeepLabV3+.
    """

    rates: tuple[int, ...]
    features: int = 256
    separable: bool = False
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        f, dt = self.features, self.dtype
        branches = []
        y = Conv(f, 1, dtype=dt, name="convs_0_0")(x)
        branches.append(nn.relu(batch_norm(train, dt, name="convs_0_1")(y)))
        for i, rate in enumerate(self.rates, start=1):
            if self.separable:
                y = Conv(
                    x.shape[-1],
                    3,
                    dilation=rate,
                    groups=x.shape[-1],
                    dtype=dt,
                    atrous_impl=self.atrous_impl,
                    name=f"convs_{i}_depthwise",
                )(x)
                y = Conv(f, 1, dtype=dt, name=f"convs_{i}_pointwise")(y)
            else:
                y = Conv(
                    f, 3, dilation=rate, atrous_impl=self.atrous_impl, dtype=dt, name=f"convs_{i}_0"
                )(x)
            branches.append(nn.relu(batch_norm(train, dt, name=f"convs_{i}_1")(y)))
        i = len(self.rates) + 1
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(dt)
        y = Conv(f, 1, dtype=dt, name=f"convs_{i}_1")(pooled)
        y = nn.relu(batch_norm(train, dt, name=f"convs_{i}_2")(y))
        branches.append(jnp.broadcast_to(y, (*x.shape[:3], f)))
        y = Conv(f, 1, dtype=dt, name="project_0")(jnp.concatenate(branches, axis=-1))
        y = nn.relu(batch_norm(train, dt, name="project_1")(y))
        return nn.Dropout(0.5, deterministic=not train)(y)
