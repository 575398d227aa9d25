"""VGG16 backbone, FCN-32s/16s/8s, SegNet and the plain encoder-decoder: shapes at odd
sizes, pinned parameter counts, equal alternative formulations, torchvision parity and
weight-name mapping, bilinear initialisation of the FCN upsamplings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import layers
from jaxseg.models.encoder_decoder import EncoderDecoder
from jaxseg.models.fcn_vgg import FCNVGG16, BilinearUpsample, LinearAsConv
from jaxseg.models.pretrained import convert_state_dict
from jaxseg.models.segnet import SegNet
from jaxseg.models.vgg import VGG16
from jaxseg.state import count_params
from tests.torch_support import (
    assert_close_relative,
    check_parity,
    randomize_batch_norm,
    state_dict_numpy,
    torch,
    torchvision,
)

K = 21
ODD = (1, 37, 45, 3)


def _normal(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _abstract(model, shape=ODD):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_fcn_output_shape_at_odd_size(output_stride):
    model = FCNVGG16(K, output_stride=output_stride)
    variables = _abstract(model)
    logits, aux = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(ODD)), variables)
    assert logits.shape == (1, 37, 45, K) and logits.dtype == jnp.float32
    assert aux == {}
    (logits, aux), _ = jax.eval_shape(
        lambda v: model.apply(
            v, jnp.zeros(ODD), train=True, rngs={"dropout": jax.random.key(1)}, mutable=True
        ),
        variables,
    )
    assert logits.shape == (1, 37, 45, K) and aux == {}


def _key(seed=0):
    # XLA compiles the "rbg" generator several times faster than threefry: the SegNet
    # init drops from ~11 s to ~4 s of CPU.
    return jax.random.key(seed, impl="rbg")


def test_segnet_forward_at_odd_size_and_unpool_impls_agree():
    x = jnp.asarray(_normal(ODD))
    variables = jax.jit(SegNet(K).init)(_key(), x)
    scatter, aux = jax.jit(SegNet(K, unpool_impl="scatter").apply)(variables, x)
    mask, _ = jax.jit(SegNet(K, unpool_impl="mask_repeat").apply)(variables, x)
    assert mask.shape == (1, 37, 45, K) and mask.dtype == jnp.float32 and aux == {}
    assert float(jnp.abs(mask).max()) > 0
    assert float(jnp.abs(mask - scatter).max()) <= 1e-5 * float(jnp.abs(scatter).max())
    # Train mode updates the BN statistics and runs at the same size.
    (logits, _), updates = SegNet(K).apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (1, 37, 45, K) and "backbone" in updates["batch_stats"]


def test_encoder_decoder_forward_at_odd_size_and_transpose_impls_agree():
    x = jnp.asarray(_normal(ODD))
    plain = EncoderDecoder(K)
    variables = jax.jit(plain.init)(_key(), x)
    a, aux = plain.apply(variables, x)
    b, _ = EncoderDecoder(K, transpose_impl="depth_to_space").apply(variables, x)
    assert a.shape == (1, 37, 45, K) and a.dtype == jnp.float32 and aux == {}
    assert float(jnp.abs(a - b).max()) <= 1e-5 * float(jnp.abs(a).max())
    bf16 = EncoderDecoder(K, dtype=jnp.bfloat16).apply(variables, x)[0]
    assert bf16.dtype == jnp.float32 and bf16.shape == a.shape


def test_invalid_options_name_the_field():
    with pytest.raises(ValueError, match="output_stride=4; valid: 8, 16, 32"):
        _abstract(FCNVGG16(K, output_stride=4))
    with pytest.raises(ValueError, match="unpool_impl='gather'; valid: scatter, mask_repeat"):
        _abstract(SegNet(K, unpool_impl="gather"))
    with pytest.raises(ValueError, match="transpose_impl='x'; valid: plain, depth_to_space"):
        _abstract(EncoderDecoder(K, transpose_impl="x"))


# ---------------------------------------------------------------- parameter counts


def _conv(cin, cout, k=3, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


# torchvision vgg16 features: 13 convs with bias, 14,714,688 parameters.
_VGG_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
_VGG_CONVS += [(256, 512)] + [(512, 512)] * 5
_VGG = sum(_conv(a, b) for a, b in _VGG_CONVS)
# fc6 (7x7, 512 -> 4096), fc7 (1x1), score_fr: 134,346,581 with the backbone, as Caffe's FCN.
_FCN = _VGG + _conv(512, 4096, 7) + _conv(4096, 4096, 1) + _conv(4096, K, 1)
_UP2 = 4 * 4 * K * K  # a 2x upsampling, no bias


@pytest.mark.parametrize(
    "output_stride,hand,pinned",
    [
        (32, _FCN + 64 * 64 * K * K, 136_152_917),
        (16, _FCN + _UP2 + _conv(512, K, 1) + 32 * 32 * K * K, 134_815_994),
        (8, _FCN + 2 * _UP2 + _conv(512, K, 1) + _conv(256, K, 1) + 16 * 16 * K * K, 134_489_759),
    ],
)
def test_fcn_param_counts(output_stride, hand, pinned):
    assert _VGG == 14_714_688
    assert hand == pinned
    assert count_params(_abstract(FCNVGG16(K, output_stride=output_stride))["params"]) == pinned


def test_segnet_param_count():
    encoder = _VGG + sum(2 * b for _, b in _VGG_CONVS)  # + BN scale and offset
    decoder_convs = [(512, 512)] * 5 + [(512, 256), (256, 256), (256, 256), (256, 128)]
    decoder_convs += [(128, 128), (128, 64), (64, 64)]
    decoder = sum(_conv(a, b) + 2 * b for a, b in decoder_convs) + _conv(64, K)
    assert (encoder, decoder) == (14_723_136, 14_731_989)
    assert encoder + decoder == 29_455_125  # the paper's 29.5M
    assert count_params(_abstract(SegNet(K))["params"]) == 29_455_125


def test_encoder_decoder_param_count():
    w = 64
    hand = _conv(3, w, bias=False) + 2 * w + _conv(w, 2 * w, bias=False) + 2 * 2 * w
    hand += 4 * 2 * w * 2 * w + 2 * 2 * w + 4 * 2 * w * w + 2 * w + _conv(w, K, 1)
    assert hand == 175_893
    assert count_params(_abstract(EncoderDecoder(K, base_width=w))["params"]) == 175_893


# ---------------------------------------------------------------- FCN upsampling


def _hand_bilinear(f):
    taps = np.concatenate([np.arange(1, 2 * f, 2), np.arange(2 * f - 1, 0, -2)]) / (2 * f)
    return np.outer(taps, taps)[:, :, None, None] * np.eye(K)


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_fcn_upsamplings_are_bilinear_and_scores_zero_at_init(output_stride):
    model = FCNVGG16(K, output_stride=output_stride)

    def init(key):
        params = model.init(key, jnp.zeros(ODD))["params"]
        # Only these leave the jit, so XLA drops the 100M-weight fc6 initialisation.
        return {n: p for n, p in params.items() if n.startswith(("upscore", "score"))}

    params = jax.jit(init)(jax.random.key(0))
    ups = {32: {"upscore32": 32}, 16: {"upscore2": 2, "upscore16": 16}}.get(
        output_stride, {"upscore2": 2, "upscore_pool4": 2, "upscore8": 8}
    )
    assert sorted(n for n in params if n.startswith("upscore")) == sorted(ups)
    for name, f in ups.items():
        assert set(params[name]) == {"kernel"}  # no bias
        np.testing.assert_allclose(params[name]["kernel"], _hand_bilinear(f), atol=1e-7)
    for name in {"score_fr", "score_pool4", "score_pool3"} & set(params):
        assert not np.any(params[name]["kernel"]) and not np.any(params[name]["bias"])


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_upsample_at_init_is_aligned_bilinear_resize(factor):
    # Away from the border (where the transposed conv sees zeros and resize clamps) the
    # initial upsampling is exactly align_corners=False bilinear: skips need no crop.
    x = jnp.asarray(_normal((1, 5, 6, 3)))
    up = BilinearUpsample(3, factor)
    y = up.apply(up.init(jax.random.key(0), x), x)
    expected = layers.resize(x, (5 * factor, 6 * factor))
    assert y.shape == expected.shape
    lo = factor // 2
    inner = (slice(None), slice(lo, 5 * factor - lo), slice(lo, 6 * factor - lo))
    np.testing.assert_allclose(y[inner], expected[inner], atol=1e-5)


@pytest.mark.parametrize("factor", [2, 8])
def test_bilinear_upsample_matches_torch_conv_transpose(factor):
    t = torch()
    ref = t.nn.ConvTranspose2d(4, 5, 2 * factor, factor, padding=factor // 2, bias=False)
    w = ref.weight.detach().numpy()
    x = _normal((1, 3, 4, 4), 1)
    kernel = w.transpose(2, 3, 0, 1)[::-1, ::-1]
    y = BilinearUpsample(5, factor).apply({"params": {"kernel": kernel}}, x)
    with t.no_grad():
        expected = ref(t.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    assert_close_relative(y, expected, 1e-5)


def test_linear_as_conv_matches_torch_linear_over_windows():
    t = torch()
    ref = t.nn.Linear(8 * 3 * 3, 16)
    x = _normal((2, 5, 6, 8), 2)
    model = LinearAsConv(16, 3)
    variables, report = convert_state_dict(_abstract(model, x.shape), state_dict_numpy(ref))
    assert sorted(report["loaded"]) == ["bias", "weight"]
    y = model.apply(variables, x)
    with t.no_grad():
        # unfold flattens each window in (C, kh, kw) order, as VGG's flatten before fc6.
        cols = t.nn.functional.unfold(t.from_numpy(x.transpose(0, 3, 1, 2)), 3, padding=1)
        expected = ref(cols.transpose(1, 2)).numpy().reshape(2, 5, 6, 16)
    assert_close_relative(y, expected)


# ---------------------------------------------------------------- torchvision parity


@pytest.fixture(scope="module")
def vgg16_reference():
    t = torch()
    t.manual_seed(0)
    return torchvision().models.vgg16(weights=None).eval()


@pytest.fixture(scope="module")
def vgg16_bn_reference():
    t = torch()
    t.manual_seed(1)
    ref = torchvision().models.vgg16_bn(weights=None).eval()
    randomize_batch_norm(ref)
    return ref


def test_vgg16_backbone_matches_torchvision(vgg16_reference):
    t = torch()
    state = state_dict_numpy(vgg16_reference)
    x = _normal((1, 64, 64, 3), 3)
    model = VGG16()
    variables, report = convert_state_dict(_abstract(model, x.shape), state)
    assert report["missing"] == [] and report["mismatched"] == []
    assert report["unused"] == sorted(k for k in state if k.startswith("classifier."))
    feats = jax.jit(model.apply)(variables, x)
    with t.no_grad():
        xt = t.from_numpy(x.transpose(0, 3, 1, 2))
        for name, end in (("pool3", 17), ("pool4", 24), ("pool5", 31)):
            expected = vgg16_reference.features[:end](xt).numpy().transpose(0, 2, 3, 1)
            assert_close_relative(feats[name], expected)


def test_fcn_loads_torchvision_vgg16_convs_and_fc6_fc7(vgg16_reference):
    state = state_dict_numpy(vgg16_reference)
    variables = _abstract(FCNVGG16(K, output_stride=8))
    _, report = convert_state_dict(variables, state, FCNVGG16.torch_renames)
    assert report["mismatched"] == []
    assert report["unused"] == ["classifier.6.bias", "classifier.6.weight"]
    assert len(report["loaded"]) == 2 * 13 + 4
    assert {k.split(".")[0] for k in report["missing"]} == {
        "score_fr", "score_pool4", "score_pool3", "upscore2", "upscore_pool4", "upscore8"
    }  # fmt: skip


def test_vgg16_bn_encoder_matches_torchvision_with_argmax(vgg16_bn_reference):
    t = torch()
    ref = vgg16_bn_reference
    x = _normal((1, 64, 64, 3), 4)
    model = VGG16(batch_norm=True, with_argmax=True)
    variables, report = convert_state_dict(_abstract(model, x.shape), state_dict_numpy(ref))
    assert report["missing"] == [] and report["mismatched"] == []
    feats = jax.jit(model.apply)(variables, x)
    with t.no_grad():
        block5 = ref.features[:43](t.from_numpy(x.transpose(0, 3, 1, 2)))
        pool5, index = t.nn.functional.max_pool2d(block5, 2, 2, return_indices=True)
    assert_close_relative(feats["block5"], block5.numpy().transpose(0, 2, 3, 1))
    assert_close_relative(feats["pool5"], pool5.numpy().transpose(0, 2, 3, 1))
    # torch's flat index into the 4x4 map -> position in the 2x2 window.
    index = index.numpy().transpose(0, 2, 3, 1)
    width = block5.shape[-1]
    np.testing.assert_array_equal(feats["argmax5"], (index // width % 2) * 2 + index % 2)


def test_segnet_encoder_loads_torchvision_vgg16_bn(vgg16_bn_reference):
    state = state_dict_numpy(vgg16_bn_reference)
    _, report = convert_state_dict(_abstract(SegNet(K)), state)
    assert report["mismatched"] == []
    assert report["unused"] == sorted(k for k in state if k.startswith("classifier."))
    # 13 convs (weight, bias) and 13 BNs (weight, bias, running mean and variance).
    assert len(report["loaded"]) == 13 * 6
    assert {k.split(".")[0] for k in report["missing"]} == {f"decoder{i}" for i in range(1, 6)}


# ---------------------------------------------------------------- full-model PyTorch twins

# The Caffe VGG nets take mean-subtracted 0-255 pixels; at that scale FCN's random-weight
# logits are O(1) (0.05 at unit scale), so the 1e-4 absolute bound is not loosened by tiny logits.
PIXEL_SCALE = 50.0


def _torch_encoder_decoder(num_classes, w):
    """Written from jaxseg/models/encoder_decoder.py's docstring (no external release), named
    as the Flax modules: (3x3 conv without bias, BN, ReLU, 2x2 max-pool) at w and 2w, (2x2
    stride-2 ConvTranspose2d without bias, BN, ReLU) at 2w and w, 1x1 classifier; the input
    zero-padded bottom/right to a multiple of 4, the logits cropped back."""
    t = torch()
    nn, F = t.nn, t.nn.functional

    class EncoderDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            for i, (cin, cout) in enumerate([(3, w), (w, 2 * w)]):
                setattr(self, f"enc{i}_conv", nn.Conv2d(cin, cout, 3, padding=1, bias=False))
                setattr(self, f"enc{i}_bn", nn.BatchNorm2d(cout))
            for i, (cin, cout) in enumerate([(2 * w, 2 * w), (2 * w, w)]):
                setattr(self, f"dec{i}_up", nn.ConvTranspose2d(cin, cout, 2, 2, bias=False))
                setattr(self, f"dec{i}_bn", nn.BatchNorm2d(cout))
            self.classifier = nn.Conv2d(w, num_classes, 1)

        def forward(self, x):
            h, wd = x.shape[2:]
            y = F.pad(x, (0, -wd % 4, 0, -h % 4))
            for i in range(2):
                y = F.relu(getattr(self, f"enc{i}_bn")(getattr(self, f"enc{i}_conv")(y)))
                y = F.max_pool2d(y, 2)
            for i in range(2):
                y = F.relu(getattr(self, f"dec{i}_bn")(getattr(self, f"dec{i}_up")(y)))
            return self.classifier(y)[..., :h, :wd]

    return EncoderDecoder()


def test_encoder_decoder_matches_the_pytorch_twin(tmp_path):
    """Square (Cin == Cout) first transposed conv: its layout is found by tracing, not shape."""
    torch().manual_seed(0)
    x = _normal((1, 37, 45, 3), 5)
    check_parity(
        EncoderDecoder(5, base_width=4),
        _torch_encoder_decoder(5, 4),
        x,
        tmp_path,
        record="encoder_decoder: twin from docstring",
    )


def _torch_segnet(num_classes):
    """SegNet as alexgkendall/SegNet-Tutorial Models/segnet_train.prototxt @ 7004d437 (VGG16
    with BN encoder, 2x2 max-pools recording their indices, Upsample layers using them,
    decoder conv+BN+ReLU stacks 512,512,512 | 512,512,256 | 256,256,128 | 128,64 | 64 and a
    3x3 classifier with bias, no BN), with nn.MaxPool2d(return_indices) / F.max_unpool2d;
    encoder = torchvision's vgg16_bn `features` (keys backbone.features.N), decoder named as
    the Flax modules (decoder{block}.{i}, i counting conv, BN, ReLU; the prototxt names
    conv5_3_D ... conv1_1_D). Input zero-padded bottom/right to a multiple of 32, logits
    cropped back (ours; the prototxt has a fixed 360 x 480 input)."""
    t, tv = torch(), torchvision()
    nn, F = t.nn, t.nn.functional
    widths = ((512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64, None))

    class SegNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Module()
            self.backbone.features = tv.models.vgg16_bn().features
            cin = 512
            for block, outs in zip(range(5, 0, -1), widths, strict=True):
                layers = []
                for cout in outs:
                    if cout is None:
                        layers.append(nn.Conv2d(cin, num_classes, 3, padding=1))
                    else:
                        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout)]
                        layers.append(nn.ReLU())
                        cin = cout
                setattr(self, f"decoder{block}", nn.Sequential(*layers))
            # He init (torch's default shrinks each conv's output ~2.5x): otherwise after 13
            # decoder convs the logits hardly depend on the input, only on the BN shifts.
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

        def forward(self, x):
            h, w = x.shape[2:]
            y, indices = F.pad(x, (0, -w % 32, 0, -h % 32)), []
            for layer in self.backbone.features:
                if isinstance(layer, nn.MaxPool2d):
                    y, index = F.max_pool2d(y, 2, 2, return_indices=True)
                    indices.append(index)
                else:
                    y = layer(y)
            for block in range(5, 0, -1):
                index = indices.pop()
                y = F.max_unpool2d(y, index, 2, 2, output_size=(2 * y.shape[2], 2 * y.shape[3]))
                y = getattr(self, f"decoder{block}")(y)
            return y[..., :h, :w]

    return SegNet()


def test_segnet_matches_the_prototxt_twin(tmp_path):
    torch().manual_seed(0)
    # Unit-scale input: at pixel scale (50) a near-tie in a block-3 window (59.97048 vs
    # 59.97050) flips the argmax between XLA's and torch's rounding, which moves one unpooled
    # value and the input gradient by 0.6 % (argmax is not differentiable there).
    x = _normal((1, 37, 45, 3), 6)
    check_parity(
        SegNet(5),
        _torch_segnet(5),
        x,
        tmp_path,
        record="SegNet: twin of alexgkendall/SegNet-Tutorial Models/segnet_train.prototxt"
        " @ 7004d437",
    )


def _torch_fcn(num_classes, output_stride):
    """FCN-8s/16s/32s as shelhamer/fcn.berkeleyvision.org voc-fcn8s/net.py @ 6c59617d (and
    voc-fcn16s, voc-fcn32s): VGG16, fc6 7x7 -> 4096, fc7 1x1, score_fr, upscore2 (4x4 stride
    2, no bias) + score_pool4, upscore_pool4 + score_pool3, upscore8 (16x16 stride 8); the
    staged nets, no skip scaling. VGG16 is torchvision's (keys backbone.features.N and
    classifier.0 / classifier.3, the Linear layers that fc6 / fc7 apply as convolutions);
    the scoring and upsampling layers keep the release's names. Where the release pads the
    input by 100, runs fc6 unpadded and crops each skip and the logits by Caffe's computed
    offsets, this follows our alignment (jaxseg/models/fcn_vgg.py): input zero-padded
    bottom/right to a multiple of 32, fc6 padded by 3, ConvTranspose2d(k=2f, stride f,
    padding f/2) so every map is exactly f times its input, logits cropped back."""
    t, tv = torch(), torchvision()
    nn, F = t.nn, t.nn.functional
    k = num_classes

    def upsample(f):
        return nn.ConvTranspose2d(k, k, 2 * f, f, padding=f // 2, bias=False)

    class FCN(nn.Module):
        def __init__(self):
            super().__init__()
            vgg = tv.models.vgg16()
            self.backbone = nn.Module()
            self.backbone.features = vgg.features
            self.classifier = vgg.classifier[:4]  # fc6, ReLU, Dropout, fc7
            self.score_fr = nn.Conv2d(4096, k, 1)
            if output_stride <= 16:
                self.upscore2, self.score_pool4 = upsample(2), nn.Conv2d(512, k, 1)
            if output_stride == 8:
                self.upscore_pool4, self.score_pool3 = upsample(2), nn.Conv2d(256, k, 1)
            setattr(self, f"upscore{output_stride}", upsample(output_stride))

        def forward(self, x):
            h, w = x.shape[2:]
            y, pools = F.pad(x, (0, -w % 32, 0, -h % 32)), {}
            for i, layer in enumerate(self.backbone.features):
                y = layer(y)
                pools[i] = y
            fc6, fc7 = self.classifier[0], self.classifier[3]
            y = F.relu(F.conv2d(y, fc6.weight.view(4096, 512, 7, 7), fc6.bias, padding=3))
            y = F.relu(F.conv2d(y, fc7.weight[:, :, None, None], fc7.bias))
            y = self.score_fr(y)
            if output_stride <= 16:
                y = self.upscore2(y) + self.score_pool4(pools[23])
            if output_stride == 8:
                y = self.upscore_pool4(y) + self.score_pool3(pools[16])
            return getattr(self, f"upscore{output_stride}")(y)[..., :h, :w]

    return FCN()


def test_fcn8s_matches_the_berkeley_twin(tmp_path):
    """FCN-8s holds every layer kind of the three variants (16s and 32s differ by which skips
    exist and the last upsampling's factor); one VGG16 + fc6 compile is ~10 s of CPU."""
    torch().manual_seed(0)
    x = PIXEL_SCALE * _normal((1, 37, 45, 3), 7)
    check_parity(
        FCNVGG16(5, output_stride=8),
        _torch_fcn(5, 8),
        x,
        tmp_path,
        record="FCN-8s: twin of shelhamer/fcn.berkeleyvision.org voc-fcn8s/net.py @ 6c59617d",
    )
