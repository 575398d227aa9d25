"""Xception39 backbone (BiSeNet's light context path): exact parameter count (a hand sum
and a PyTorch twin written here after the authors' TorchSeg release), feature shapes at
odd sizes, and forward parity with the twin through the release's key layout (torch tests
skip without torch)."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models import pretrained
from jaxseg.models.xception39 import Xception39
from jaxseg.state import count_params
from tests.torch_support import assert_close_relative, randomize_batch_norm, torch

# BatchNorm running statistics not counted.
XCEPTION39 = 299_448


def _shapes(model, x):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def test_xception39_count_as_hand_sum():
    def sep(cin, cout):  # depthwise 3x3, pointwise 1x1, BN
        return 9 * cin + cin * cout + 2 * cout

    def block(cin, mid, proj):
        shortcut = sep(cin, 4 * mid) if proj else 0
        return sep(cin, mid) + sep(mid, mid) + sep(mid, 4 * mid) + shortcut

    total, cin = 27 * 8 + 2 * 8, 8  # stem: 3x3 conv 3 -> 8, BN
    for blocks, mid in ((4, 16), (8, 32), (4, 64)):
        total += block(cin, mid, True) + (blocks - 1) * block(4 * mid, mid, False)
        cin = 4 * mid
    assert total == XCEPTION39
    variables = _shapes(Xception39(), jnp.zeros((1, 64, 64, 3)))
    assert count_params(variables["params"]) == XCEPTION39


def test_xception39_shapes_at_odd_size():
    x = jnp.zeros((2, 67, 45, 3))
    model = Xception39(jnp.bfloat16)
    out = jax.eval_shape(lambda v: model.apply(v, x), _shapes(model, x))
    assert {k: v.shape for k, v in out.items()} == {
        "stem": (2, 34, 23, 8),
        "layer1": (2, 9, 6, 64),
        "layer2": (2, 5, 3, 128),
        "layer3": (2, 3, 2, 256),
    }
    assert {v.dtype for v in out.values()} == {jnp.dtype(jnp.bfloat16)}


def torch_xception39():
    """TorchSeg's xception39 (furnace/base_model/xception.py) with the release's module
    names; forward returns the stem (before the max-pool) and the three stages."""
    t = torch()
    nn, F = t.nn, t.nn.functional

    class ConvBnRelu(nn.Module):
        def __init__(self, cin, cout, k, stride=1, relu=True):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.relu = relu

        def forward(self, x):
            x = self.bn(self.conv(x))
            return F.relu(x) if self.relu else x

    class SeparableConvBnRelu(nn.Module):
        def __init__(self, cin, cout, stride=1, relu=True):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
            self.point_wise_cbr = ConvBnRelu(cin, cout, 1, relu=relu)

        def forward(self, x):
            return self.point_wise_cbr(self.conv1(x))

    class Block(nn.Module):
        def __init__(self, cin, mid, stride):
            super().__init__()
            self.proj = SeparableConvBnRelu(cin, 4 * mid, stride, False) if stride > 1 else None
            self.residual_branch = nn.Sequential(
                SeparableConvBnRelu(cin, mid, stride),
                SeparableConvBnRelu(mid, mid),
                SeparableConvBnRelu(mid, 4 * mid, relu=False),
            )

        def forward(self, x):
            shortcut = x if self.proj is None else self.proj(x)
            return F.relu(shortcut + self.residual_branch(x))

    class Xception(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = ConvBnRelu(3, 8, 3, 2)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = 8
            for i, (blocks, mid) in enumerate(((4, 16), (8, 32), (4, 64))):
                stage = [Block(cin, mid, 2)] + [Block(4 * mid, mid, 1) for _ in range(blocks - 1)]
                setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
                cin = 4 * mid

        def forward(self, x):
            out = {"stem": self.conv1(x)}
            x = self.maxpool(out["stem"])
            for name in ("layer1", "layer2", "layer3"):
                x = out[name] = getattr(self, name)(x)
            return out

    return Xception()


def test_xception39_matches_torch_twin():
    t = torch()
    t.manual_seed(0)
    ref = torch_xception39().eval()
    randomize_batch_norm(ref)
    assert sum(p.numel() for p in ref.parameters()) == XCEPTION39
    x = np.random.default_rng(0).standard_normal((1, 67, 45, 3)).astype(np.float32)
    model = Xception39()
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items() if v.ndim > 0}
    variables, report = pretrained.convert_state_dict(_shapes(model, x), state)
    assert report["missing"] == [] and report["mismatched"] == [] and report["unused"] == []
    ours = jax.jit(model.apply)(variables, x)
    with t.no_grad():
        theirs = ref(t.from_numpy(x.transpose(0, 3, 1, 2)))
    for key in ("stem", "layer1", "layer2", "layer3"):
        assert_close_relative(ours[key], theirs[key].numpy().transpose(0, 2, 3, 1), 1e-4)
