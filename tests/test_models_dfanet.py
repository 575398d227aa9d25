"""DFANet A / B: parameter counts equal to a PyTorch twin of the widely used implementation,
forward and input-gradient parity with it through its saved state dict (torch tests skip
without torch), pinned numbers, and shapes at odd sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.dfanet import VARIANTS, DFANet
from jaxseg.state import count_params
from tests.torch_support import check_parity, torch

# 19 classes. Li et al. 2019 (Table 4) give 7.8 M parameters for DFANet A and 4.8 M for B;
# the layout their Table 1 and Sec. 3 describe (and Tramac's implementation, the twin below)
# has 1.83 M / 1.10 M. We pin the layout, not the paper's figure, which it cannot reach.
COUNTS = {"A": 1_831_051, "B": 1_099_883}


def _count(model):
    x = jnp.zeros((1, 64, 64, 3))
    return count_params(jax.eval_shape(lambda: model.init(jax.random.key(0), x))["params"])


@pytest.mark.parametrize("variant", ["A", pytest.param("B", marks=pytest.mark.slow)])
def test_counts(variant):
    assert _count(DFANet(19, variant)) == COUNTS[variant]


@pytest.mark.slow  # tracing three backbones: ~10-30 s on 2 shared cores
def test_shapes_at_odd_size_and_variants():
    x = jnp.zeros((2, 37, 45, 3))
    model = DFANet(3, "B", dtype=jnp.bfloat16)
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    logits, aux = jax.eval_shape(lambda v: model.apply(v, x), v)
    assert logits.shape == (2, 37, 45, 3) and logits.dtype == jnp.float32 and aux == {}
    with pytest.raises(ValueError, match="variant"):
        _count(DFANet(3, "C"))


def torch_dfanet(num_classes, variant, inplace_relu=True, align_corners=True):
    """Tramac/awesome-semantic-segmentation-pytorch core/models/dfanet.py @
    68d2c971f0dcccb82b4a738aad5dd5bb6c12bf8b with base_models/xception.py @
    3bd67a732dac52184dca33c2a1459b985fa0e895 (XceptionA, Enc, BlockA, FCAttention), rewritten
    with its module names and `variant`'s widths (the reference builds A only). Resizes go
    to the target map's size, which equals the reference's fixed factors where sides are
    multiples of 64. The keyword arguments are where jaxseg computes otherwise, the
    reference's values as defaults: align_corners (jaxseg: False), and inplace_relu: the
    reference's blocks start with one nn.ReLU(inplace=True) that rectifies the block's
    input tensor itself, so the block's residual (or skip conv) and every later reader of
    that tensor (the next backbone's concatenation, the decoder's enc2 reductions) see
    relu(x), a side effect of the in-place op (which also makes its backward raise: the
    op overwrites a tensor autograd saved); jaxseg computes Xception's design, a residual
    of x."""
    t = torch()
    nn, F = t.nn, t.nn.functional
    (w2, w3, w4), (n2, n3, n4) = VARIANTS[variant]

    def resize(x, like):
        return F.interpolate(x, like.shape[2:], mode="bilinear", align_corners=align_corners)

    class SeparableConv2d(nn.Module):
        def __init__(self, cin, cout, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
            self.bn = nn.BatchNorm2d(cin)
            self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

        def forward(self, x):
            return self.pointwise(self.bn(self.conv1(x)))

    class BlockA(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            if cin != cout or stride != 1:
                self.skip = nn.Conv2d(cin, cout, 1, stride, bias=False)
                self.skipbn = nn.BatchNorm2d(cout)
            else:
                self.skip = None
            mid, relu, rep = cout // 4, nn.ReLU(inplace_relu), []
            for a, b, s in ((cin, mid, 1), (mid, mid, 1), (mid, cout, stride)):
                rep += [relu, SeparableConv2d(a, b, s), nn.BatchNorm2d(b)]
            self.rep = nn.Sequential(*rep)

        def forward(self, x):
            out = self.rep(x)  # with inplace_relu, x is rectified from here on
            return out + (x if self.skip is None else self.skipbn(self.skip(x)))

    class Enc(nn.Module):
        def __init__(self, cin, cout, n):
            super().__init__()
            blocks = [BlockA(cin, cout, 2), *(BlockA(cout, cout, 1) for _ in range(n - 1))]
            self.block = nn.Sequential(*blocks)

        def forward(self, x):
            return self.block(x)

    class FCAttention(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.fc = nn.Linear(c, 1000)
            seq = [nn.Conv2d(1000, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace_relu)]
            self.conv = nn.Sequential(*seq)

        def forward(self, x):
            att = self.fc(x.mean((2, 3)))[:, :, None, None]
            return x * self.conv(att)

    def cbr(cin, cout):  # core/nn/basic.py's _ConvBNReLU(cin, cout, 1): conv, bn, relu
        m = nn.Module()
        m.conv, m.bn = nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)
        m.forward = lambda x: F.relu(m.bn(m.conv(x)))
        return m

    class XceptionA(nn.Module):
        def __init__(self):
            super().__init__()
            conv = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
            self.conv1 = nn.Sequential(conv, nn.BatchNorm2d(8), nn.ReLU(inplace_relu))
            self.enc2, self.enc3, self.enc4 = Enc(8, w2, n2), Enc(w2, w3, n3), Enc(w3, w4, n4)
            self.fca = FCAttention(w4)
            self.fc = nn.Linear(w4, 1000)  # ImageNet classifier, unused by DFANet

    class DFANet(nn.Module):
        def __init__(self):
            super().__init__()
            self.pretrained = XceptionA()
            for k, names in (
                (2, ("enc2_2", "enc3_2", "enc4_2")),
                (3, ("enc2_3", "enc3_3", "enc3_4")),
            ):
                setattr(self, names[0], Enc(w2 + w4, w2, n2))
                setattr(self, names[1], Enc(w3 + w2, w3, n3))
                setattr(self, names[2], Enc(w4 + w3, w4, n4))
                setattr(self, f"fca_{k}", FCAttention(w4))
            for k in (1, 2, 3):
                setattr(self, f"enc2_{k}_reduce", cbr(w2, 32))
            self.conv_fusion = cbr(32, 32)
            for k in (1, 2, 3):
                setattr(self, f"fca_{k}_reduce", cbr(w4, 32))
            self.conv_out = nn.Conv2d(32, num_classes, 1)

        def forward(self, x):
            p = self.pretrained
            enc2 = p.enc2(p.conv1(x))
            enc3 = p.enc3(enc2)
            enc4 = p.enc4(enc3)
            fca = p.fca(enc4)
            encs2, fcas = [enc2], [fca]
            for e2, e3, e4, f in (
                (self.enc2_2, self.enc3_2, self.enc4_2, self.fca_2),
                (self.enc2_3, self.enc3_3, self.enc3_4, self.fca_3),
            ):
                enc2 = e2(t.cat([enc2, resize(fca, enc2)], 1))
                enc3 = e3(t.cat([enc3, enc2], 1))
                enc4 = e4(t.cat([enc4, enc3], 1))
                fca = f(enc4)
                encs2.append(enc2)
                fcas.append(fca)
            # As the reference, the reductions run after all three backbones (the in-place
            # ReLUs have rectified encs2 by then).
            reduce2 = (self.enc2_1_reduce, self.enc2_2_reduce, self.enc2_3_reduce)
            fusion = sum(resize(r(e), encs2[0]) for r, e in zip(reduce2, encs2, strict=True))
            fusion = self.conv_fusion(fusion)
            reduce4 = (self.fca_1_reduce, self.fca_2_reduce, self.fca_3_reduce)
            for r, f in zip(reduce4, fcas, strict=True):
                fusion = fusion + resize(r(f), encs2[0])
            return resize(self.conv_out(fusion), x)

    return DFANet()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_counts_equal_the_pytorch_twin(variant):
    twin = torch_dfanet(19, variant)
    count = sum(p.numel() for k, p in twin.named_parameters() if not k.startswith("pretrained.fc."))
    assert count == COUNTS[variant]


def test_dfanet_matches_the_reference_implementation(tmp_path):
    """Variant B (the narrower) at 64 x 128, sides multiples of 64 as the reference needs.
    The twin's file loads whole: its unused ImageNet classifier is dropped by
    DFANet.adapt_state_dict."""
    torch().manual_seed(0)
    ref = torch_dfanet(5, "B", inplace_relu=False, align_corners=False)
    x = np.random.default_rng(0).standard_normal((1, 64, 128, 3)).astype(np.float32)
    record = "DFANet B: Tramac/awesome-semantic-segmentation-pytorch"
    record += " core/models/dfanet.py @ 68d2c97 (twin)"
    check_parity(DFANet(5, "B"), ref, x, tmp_path, record=record)
