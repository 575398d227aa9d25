"""ESPNet / ESPNet-C: parameter counts against the paper, shapes at odd sizes, and the fast
formulations (space-to-batch dilations, depth-to-space transposed convs) equal to the plain."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.espnet import ESP, ESPNet
from jaxseg.models.pretrained import load_pretrained
from jaxseg.state import count_params
from tests.torch_support import check_parity, torch


def _shapes(model, x):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def test_counts():
    x = jnp.zeros((1, 64, 64, 3))
    espnet = count_params(_shapes(ESPNet(20), x)["params"])
    # Mehta et al. 2018, Table 1 / Sec. 4: ESPNet (alpha2 = 2, alpha3 = 8) has 0.364 M
    # parameters for Cityscapes' 20 classes (19 + background).
    assert espnet == 365_109 and abs(espnet / 364_000 - 1) < 0.03
    # ESPNet-C with the release's p=2, q=8 (train/main.py): ESPNet without its decoder.
    assert count_params(_shapes(ESPNet(20, "espnet_c"), x)["params"]) == 349_449
    # An ESP module (64 -> 64): 1x1 64->12, 3x3 12->16 (d1), four 3x3 12->12, BN + PReLU.
    y = jnp.zeros((1, 16, 16, 64))
    esp = count_params(jax.eval_shape(lambda: ESP(64).init(jax.random.key(0), y, False))["params"])
    assert esp == 64 * 12 + 9 * 12 * 16 + 4 * 9 * 12 * 12 + 3 * 64


@pytest.mark.parametrize("variant", ["espnet", "espnet_c"])
def test_logits_at_odd_size(variant):
    x = jnp.zeros((2, 37, 45, 3))
    model = ESPNet(5, variant, dtype=jnp.bfloat16)
    logits, aux = jax.eval_shape(lambda v: model.apply(v, x), _shapes(model, x))
    assert logits.shape == (2, 37, 45, 5) and logits.dtype == jnp.float32 and aux == {}
    with pytest.raises(ValueError, match="variant"):
        _shapes(ESPNet(5, "espnet_d"), x)


@pytest.mark.slow  # ~10-30 s on 2 shared cores
def test_fast_formulations_give_the_same_logits():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 35, 41, 3)), jnp.float32)
    plain = ESPNet(5, atrous_impl="plain", transpose_impl="plain")
    rng = np.random.default_rng(1)
    variables = jax.tree.map(
        lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype), _shapes(plain, x)
    )
    a, _ = jax.jit(plain.apply)(variables, x)
    b, _ = jax.jit(
        plain.clone(atrous_impl="space_to_batch", transpose_impl="depth_to_space").apply
    )(variables, x)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(jnp.abs(a).max()))


def _torch_espnet(classes, p=2, q=8, decoder=True):
    """The authors' ESPNet / ESPNet_Encoder, rewritten after sacmehta/ESPNet train/Model.py
    @ b335e48c257b66fb6098b7bc21a7ca5e3ac19216 with its module names, so the release's
    .pth files map key for key. Two changes that leave the arithmetic alone: ESPNet's
    forward calls the encoder's submodules through `features` (the release keeps them in
    a plain list `self.modules`, which shadows nn.Module.modules()), and `decoder=False`
    (ESPNet-C) upsamples the encoder's stride-8 logits bilinearly to the input, as jaxseg
    does (the release trains ESPNet-C on labels scaled down to its output instead)."""
    t = torch()
    nn, F = t.nn, t.nn.functional

    def conv(cin, cout, k, stride=1, d=1):
        return nn.Conv2d(cin, cout, k, stride, (k - 1) // 2 * d, dilation=d, bias=False)

    class C(nn.Module):  # the release's C and CDilated: a bias-free conv named "conv"
        def __init__(self, cin, cout, k, stride=1, d=1):
            super().__init__()
            self.conv = conv(cin, cout, k, stride, d)

        def forward(self, x):
            return self.conv(x)

    class BR(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.bn = nn.BatchNorm2d(c, eps=1e-3)
            self.act = nn.PReLU(c)

        def forward(self, x):
            return self.act(self.bn(x))

    class CBR(BR):
        def __init__(self, cin, cout, k, stride=1):
            super().__init__(cout)
            self.conv = conv(cin, cout, k, stride)

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class ESPBase(nn.Module):  # reduce, five dilated branches, hierarchical sums
        def __init__(self, cin, cout, k, stride):
            super().__init__()
            n = cout // 5
            self.c1 = C(cin, n, k, stride)
            for d in (1, 2, 4, 8, 16):
                setattr(self, f"d{d}", C(n, cout - 4 * n if d == 1 else n, 3, d=d))

        def branches(self, x):
            y = self.c1(x)
            outs = [getattr(self, f"d{d}")(y) for d in (1, 2, 4, 8, 16)]
            for i in range(2, 5):
                outs[i] = outs[i] + outs[i - 1]
            return t.cat(outs, 1)

    class DownSamplerB(ESPBase):  # BN and PReLU directly on the module
        def __init__(self, cin, cout):
            super().__init__(cin, cout, 3, 2)
            self.bn = nn.BatchNorm2d(cout, eps=1e-3)
            self.act = nn.PReLU(cout)

        def forward(self, x):
            return self.act(self.bn(self.branches(x)))

    class DilatedParllelResidualBlockB(ESPBase):  # sic: the release's name
        def __init__(self, cin, cout, add=True):
            super().__init__(cin, cout, 1, 1)
            self.bn = BR(cout)
            self.add = add

        def forward(self, x):
            y = self.branches(x)
            return self.bn(x + y if self.add else y)

    def pool(x):  # InputProjectionA: AvgPool2d(3, 2, padding=1), padding counted
        return F.avg_pool2d(x, 3, 2, 1)

    class ESPNet_Encoder(nn.Module):  # noqa: N801  the release's name
        def __init__(self):
            super().__init__()
            self.level1 = CBR(3, 16, 3, 2)
            self.b1 = BR(19)
            self.level2_0 = DownSamplerB(19, 64)
            self.level2 = nn.ModuleList(DilatedParllelResidualBlockB(64, 64) for _ in range(p))
            self.b2 = BR(131)
            self.level3_0 = DownSamplerB(131, 128)
            self.level3 = nn.ModuleList(DilatedParllelResidualBlockB(128, 128) for _ in range(q))
            self.b3 = BR(256)
            self.classifier = C(256, classes, 1)

        def features(self, x):
            out0_cat = self.b1(t.cat([self.level1(x), pool(x)], 1))
            out1_0 = out1 = self.level2_0(out0_cat)
            for layer in self.level2:
                out1 = layer(out1)
            out1_cat = self.b2(t.cat([out1, out1_0, pool(pool(x))], 1))
            out2_0 = out2 = self.level3_0(out1_cat)
            for layer in self.level3:
                out2 = layer(out2)
            logits = self.classifier(self.b3(t.cat([out2_0, out2], 1)))
            return out0_cat, out1_cat, logits

        def forward(self, x):
            logits = self.features(x)[2]
            return F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=False)

    def up(k):
        return nn.ConvTranspose2d(k, k, 2, stride=2, bias=False)

    class ESPNet(nn.Module):
        def __init__(self):
            super().__init__()
            k = classes
            self.encoder = ESPNet_Encoder()
            self.level3_C = C(131, k, 1)
            self.br = nn.BatchNorm2d(k, eps=1e-3)
            self.conv = CBR(19 + k, k, 3)
            self.up_l3 = nn.Sequential(up(k))
            self.combine_l2_l3 = nn.Sequential(
                BR(2 * k), DilatedParllelResidualBlockB(2 * k, k, False)
            )
            self.up_l2 = nn.Sequential(up(k), BR(k))
            self.classifier = up(k)

        def forward(self, x):
            out0_cat, out1_cat, logits = self.encoder.features(x)
            y = self.up_l3(self.br(logits))
            y = self.up_l2(self.combine_l2_l3(t.cat([self.level3_C(out1_cat), y], 1)))
            return self.classifier(self.conv(t.cat([y, out0_cat], 1)))

    return ESPNet() if decoder else ESPNet_Encoder()


# ESPNet-C's forward is ESPNet's encoder (covered by the first) plus a bilinear resize:
# slow for the ~15 s its compile takes; the encoder file's keys are checked below.
@pytest.mark.parametrize("variant", ["espnet", pytest.param("espnet_c", marks=pytest.mark.slow)])
def test_espnet_matches_the_authors_release(variant, tmp_path):
    """The release's layout saved as a .pth (its keys, its ConvTranspose2d weights with
    Cin == Cout, which a plain conv conversion would silently get wrong) loads through
    load_pretrained; logits and the input gradient agree. The release needs sides that
    are multiples of 8 (its decoder concatenates exact doublings); p=2, q=8 is the only
    depth jaxseg has. 5 classes: the fewest for which the decoder's ESP module has a
    channel per branch in the release (int(5 / 5) = 1)."""
    torch().manual_seed(0)
    ref = _torch_espnet(5, decoder=variant == "espnet")
    assert sum(p.numel() for p in ref.parameters()) == count_params(
        _shapes(ESPNet(5, variant), jnp.zeros((1, 40, 56, 3)))["params"]
    )
    x = np.random.default_rng(0).standard_normal((1, 40, 56, 3)).astype(np.float32)
    record = "ESPNet" if variant == "espnet" else "ESPNet-C"
    check_parity(
        ESPNet(5, variant),
        ref,
        x,
        tmp_path,
        record=f"{record}: sacmehta/ESPNet train/Model.py @ b335e48 (twin)",
    )


def test_the_release_encoder_file_loads_into_both_variants(tmp_path):
    """The release's ESPNet-C file (an ESPNet_Encoder's state dict, no "encoder." prefix)
    fills all of ESPNet-C and ESPNet's encoder, as the authors start the decoder's
    training (train/main.py's encoderFile); ESPNet's decoder is left missing."""
    t = torch()
    state = _torch_espnet(5, decoder=False).state_dict()
    t.save(state, tmp_path / "encoder.pth")
    tensors = sum(v.ndim > 0 for v in state.values())  # all but num_batches_tracked
    x = jnp.zeros((1, 40, 56, 3))
    for variant, missing in (("espnet_c", None), ("espnet", "missing")):
        model, lines = ESPNet(5, variant), []
        load_pretrained(model, _shapes(model, x), tmp_path / "encoder.pth", lines.append)
        assert lines[0].endswith(f"loaded {tensors} tensors")
        assert [line.split(": ")[1].split()[1] for line in lines[1:]] == (
            [missing] if missing else []
        )
