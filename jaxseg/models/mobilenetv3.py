"""MobileNetV3-Large (Howard et al., 2019) feature extractor, as torchvision's
mobilenet_v3_large(...).features.

Inverted residual blocks (1x1 expand, depthwise k x k, optional squeeze-and-excitation
with a hard-sigmoid gate, linear 1x1 project, residual when shapes allow), ReLU or
hard-swish, BatchNorm with eps 1e-3 and torch momentum 0.01, and a final 1x1 conv to 960
channels. dilated=True is torchvision's segmentation variant: the last stage (features
13-15) keeps stride 1 and uses dilation 2, so the output stride is 16 instead of 32.

Weight names: a MobileNetV3Large named "backbone" inside a segmentation model has the
keys of torchvision's segmentation checkpoints ("backbone.0.0.weight",
"backbone.1.block.0.0.weight", ...: IntermediateLayerGetter over `features`), so
lraspp_mobilenet_v3_large / deeplabv3_mobilenet_v3_large files load as they are.
The ImageNet classification checkpoint names the same tensors "features.N...":
- used on its own (top level), MobileNetV3Large's torch_renames add "features.";
- under a segmentation model, map the file first with `imagenet_to_backbone(state)`
  ("features." -> "backbone.", classifier dropped), then pretrained.convert_state_dict.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.layers import ATROUS_IMPLS, Conv, _check

# torchvision's mobilenet_v3_large table, one row per features[1..15]:
# (kernel, expanded channels, out channels, squeeze-excite, hard-swish, stride).
LARGE = (
    (3, 16, 16, False, False, 1),
    (3, 64, 24, False, False, 2),  # features[2]: stride 4
    (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2),  # features[4]: stride 8 ("low")
    (5, 120, 40, True, False, 1),
    (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2),  # features[7]: stride 16
    (3, 200, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 480, 112, True, True, 1),
    (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2),  # features[13]: stride 32, or dilation 2 when dilated
    (5, 960, 160, True, True, 1),
    (5, 960, 160, True, True, 1),
)
STEM, LAST = 16, 960


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: nearest multiple of divisor, never below 90% of v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def batch_norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
    """MobileNetV3's BatchNorm: eps 1e-3 and torch momentum 0.01 (0.99 here)."""
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.99, epsilon=1e-3, dtype=dtype, name=name
    )


class SqueezeExcitation(nn.Module):
    """x [B,H,W,C] -> x * hardsigmoid(fc2(relu(fc1(mean_hw x)))); fc1 to `squeeze` channels."""

    squeeze: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(self.dtype)
        s = nn.relu(Conv(self.squeeze, 1, use_bias=True, dtype=self.dtype, name="fc1")(s))
        s = Conv(x.shape[-1], 1, use_bias=True, dtype=self.dtype, name="fc2")(s)
        return x * jax.nn.hard_sigmoid(s)


class InvertedResidual(nn.Module):
    """x [B,H,W,Cin] -> [B,H/stride,W/stride,out]; submodules "block_j_*" = torch block.j.*."""

    kernel: int
    expanded: int
    out: int
    use_se: bool
    hardswish: bool
    stride: int = 1
    dilation: int = 1
    atrous_impl: str = "plain"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = jax.nn.hard_swish if self.hardswish else nn.relu
        dt, cin, j = self.dtype, x.shape[-1], 0
        y = x
        if self.expanded != cin:
            y = Conv(self.expanded, 1, dtype=dt, name=f"block_{j}_0")(y)
            y = act(batch_norm(train, dt, f"block_{j}_1")(y))
            j += 1
        # torchvision trades the stride for the dilation in the dilated stage.
        y = Conv(
            self.expanded,
            self.kernel,
            stride=1 if self.dilation > 1 else self.stride,
            dilation=self.dilation,
            groups=self.expanded,
            atrous_impl=self.atrous_impl,
            dtype=dt,
            name=f"block_{j}_0",
        )(y)
        y = act(batch_norm(train, dt, f"block_{j}_1")(y))
        j += 1
        if self.use_se:
            y = SqueezeExcitation(make_divisible(self.expanded // 4), dt, name=f"block_{j}")(y)
            j += 1
        y = Conv(self.out, 1, dtype=dt, name=f"block_{j}_0")(y)
        y = batch_norm(train, dt, f"block_{j}_1")(y)
        if self.stride == 1 and cin == self.out:
            y = y + x.astype(dt)
        return y


class MobileNetV3Large(nn.Module):
    """x [B,H,W,3] -> dict of features (compute dtype), strides for dilated=False:

    "c1" features[1] 16ch /2, "c2" features[3] 24ch /4, "low" features[4] 40ch /8,
    "c3" features[6] 40ch /8, "c4" features[12] 112ch /16,
    "high" features[16] 960ch /32 (/16 when dilated). Odd sizes: each stride-2 conv
    gives ceil(n/2), as torch.
    """

    dilated: bool = False
    atrous_impl: str = "plain"  # plain | space_to_batch: the same dilated depthwise convs
    dtype: Any = jnp.float32

    # A standalone backbone loads the ImageNet checkpoint ("features.0.0.weight").
    torch_renames: ClassVar[tuple[tuple[str, str], ...]] = ((r"^(?=\d)", "features."),)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        _check("atrous_impl", self.atrous_impl, ATROUS_IMPLS)
        dt = self.dtype
        x = Conv(STEM, 3, stride=2, dtype=dt, name="0_0")(x.astype(dt))
        x = jax.nn.hard_swish(batch_norm(train, dt, "0_1")(x))
        taps = {1: "c1", 3: "c2", 4: "low", 6: "c3", 12: "c4"}
        out = {}
        for i, (k, exp, cout, se, hs, stride) in enumerate(LARGE, start=1):
            dilation = 2 if self.dilated and i >= 13 else 1
            x = InvertedResidual(
                k, exp, cout, se, hs, stride, dilation, self.atrous_impl, dt, name=str(i)
            )(x, train)
            if i in taps:
                out[taps[i]] = x
        x = Conv(LAST, 1, dtype=dt, name="16_0")(x)
        out["high"] = jax.nn.hard_swish(batch_norm(train, dt, "16_1")(x))
        return out


def imagenet_to_backbone(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An ImageNet mobilenet_v3_large state dict with the keys of a segmentation
    model's backbone: "features.N..." -> "backbone.N...", "classifier.*" dropped."""
    prefix = "features."
    return {"backbone." + k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
