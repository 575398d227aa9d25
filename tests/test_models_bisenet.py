"""BiSeNet V1 (ResNet-18 and Xception39 context paths): exact parameter counts, shapes and
aux outputs at odd sizes, and forward parity with a PyTorch twin written here after the
authors' TorchSeg release (torch tests skip without torch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import pretrained
from jaxseg.models.bisenet import BiSeNetV1
from jaxseg.models.bisenetv2 import BiSeNetV2
from jaxseg.state import count_params
from tests.test_models_xception39 import XCEPTION39, torch_xception39
from tests.torch_support import check_parity, torch, torchvision

# 19 classes (Cityscapes), BatchNorm running statistics not counted.
BISENETV1_R18 = 13_494_777
BISENETV1_R18_NO_AUX = 12_894_163
# The paper (Yu et al., ECCV 2018, Table 6) gives 5.8 M for its Xception39 model and
# 49.0 M for ResNet-18: not parameter counts but the float32 size in MiB of the network
# without its auxiliary heads (1,541,963 x 4 B = 5.88 MiB; 12,894,163 x 4 B = 49.19 MiB),
# checked in test_paper_figures_are_float32_sizes_in_mib. The counts are pinned.
BISENETV1_X39 = 1_842_289
BISENETV1_X39_NO_AUX = 1_541_963


def _shapes(model, x):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def _count(model):
    return count_params(_shapes(model, jnp.zeros((1, 64, 64, 3)))["params"])


def _conv(k, cin, cout, bias=False):
    return k * k * cin * cout + (cout if bias else 0)


def _bisenetv1_hand_sum(backbone: int, c16: int, c32: int, aux_mid: int) -> tuple[int, int]:
    """(params without the aux heads, the two aux heads' params) at 19 classes, for a
    context path of `backbone` params whose stride-16/32 features have c16/c32 channels."""
    cbr = lambda k, cin, cout: _conv(k, cin, cout) + 2 * cout  # noqa: E731
    spatial = cbr(7, 3, 64) + 2 * cbr(3, 64, 64) + cbr(1, 64, 128)
    arms = cbr(3, c32, 128) + cbr(3, c16, 128) + 2 * (_conv(1, 128, 128) + 256)
    context = cbr(1, c32, 128) + arms + 2 * cbr(3, 128, 128)
    ffm = cbr(1, 256, 256) + 2 * _conv(1, 256, 256)
    head = cbr(3, 256, 64) + _conv(1, 64, 19, True)
    aux = 2 * (cbr(3, 128, aux_mid) + _conv(1, aux_mid, 19, True))
    return backbone + spatial + context + ffm + head, aux


def test_bisenetv1_counts_as_hand_sums():
    r18 = 11_176_512  # torchvision resnet18 without fc
    no_aux, aux = _bisenetv1_hand_sum(r18, 256, 512, 256)
    assert no_aux == BISENETV1_R18_NO_AUX
    assert _count(BiSeNetV1(19)) == BISENETV1_R18_NO_AUX
    assert _count(BiSeNetV1(19, aux_head=True)) == BISENETV1_R18_NO_AUX + aux == BISENETV1_R18


def test_bisenetv1_xception39_counts_as_hand_sums():
    # Xception39's stages give 64, 128, 256 channels at strides 8, 16, 32; the X39
    # release's aux heads have 128 mid channels.
    no_aux, aux = _bisenetv1_hand_sum(XCEPTION39, 128, 256, 128)
    assert no_aux == BISENETV1_X39_NO_AUX
    assert _count(BiSeNetV1(19, "xception39")) == BISENETV1_X39_NO_AUX
    assert _count(BiSeNetV1(19, "xception39", aux_head=True)) == BISENETV1_X39_NO_AUX + aux
    assert BISENETV1_X39_NO_AUX + aux == BISENETV1_X39


@pytest.mark.parametrize("backbone,size", [("resnet18", (37, 45)), ("xception39", (67, 45))])
def test_bisenetv1_shapes_at_odd_size(backbone, size):
    x = jnp.zeros((2, *size, 3))
    model = BiSeNetV1(3, backbone, aux_head=True, dtype=jnp.bfloat16)
    logits, aux = jax.eval_shape(lambda v: model.apply(v, x), _shapes(model, x))
    assert logits.shape == (2, *size, 3) and logits.dtype == jnp.float32
    assert {k: v.shape for k, v in aux.items()} == {
        "context16": (2, *size, 3),
        "context8": (2, *size, 3),
    }


def test_bisenetv1_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(ValueError, match="resnet18, resnet34, xception39"):
        _shapes(BiSeNetV1(3, backbone="resnet50"), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize("backbone", ["resnet18", "xception39"])
def test_bisenetv1_loads_an_imagenet_backbone_file_into_the_context_path(backbone, tmp_path):
    model = BiSeNetV1(3, backbone)
    variables = _shapes(model, jnp.zeros((1, 32, 32, 3)))
    # The backbone's own keys (no "context_path." prefix) in torch layout, plus a classifier.
    rng = np.random.default_rng(0)
    state = {"fc.weight": np.zeros((10, 4), np.float32)}
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        names = tuple(str(p.key) for p in path)
        if names[1] == "context_path":
            shape = tuple(leaf.shape[i] for i in (3, 2, 0, 1)) if leaf.ndim == 4 else leaf.shape
            state[pretrained.torch_key(names[:1] + names[2:])] = rng.random(shape, np.float32)
    np.savez(tmp_path / "imagenet.npz", **state)
    lines = []
    out = pretrained.load_pretrained(model, variables, tmp_path / "imagenet.npz", lines.append)
    loaded = lambda tree: [isinstance(v, np.ndarray) for v in jax.tree.leaves(tree)]  # noqa: E731
    assert all(loaded(out["params"]["context_path"])) and not any(loaded(out["params"]["ffm"]))
    assert lines[0].endswith(f"loaded {len(state) - 1} tensors")
    assert lines[-1].endswith("1 unused: context_path.fc.weight")  # after "N missing: ..."


def _torch_bisenetv1(num_classes, backbone="resnet18"):
    """TorchSeg's BiSeNet, model/bisenet/cityscapes.bisenet.R18/network.py (X39: the
    .X39 folder's) @ 99ab13df in yu-changqian/TorchSeg, its module names kept, so a release
    file's keys load. Where jaxseg computes otherwise, the twin follows jaxseg and says so:
    bilinear resizing with align_corners=False (TorchSeg: True) and every head resized to
    the input size (TorchSeg: by its scale factor 8 or 16, the same size when the input
    side is a multiple of 32)."""
    t, tv = torch(), torchvision()
    nn, F = t.nn, t.nn.functional

    def up(y, size):
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)

    class ConvBN(nn.Module):
        def __init__(self, cin, cout, k, stride=1):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(cout)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    class ARM(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv_3x3 = ConvBN(cin, cout, 3)
            self.attention_conv = nn.Conv2d(cout, cout, 1, bias=False)
            self.attention_bn = nn.BatchNorm2d(cout)

        def forward(self, x):
            x = self.conv_3x3(x)
            a = self.attention_bn(self.attention_conv(x.mean((2, 3), keepdim=True)))
            return x * a.sigmoid()

    class FFM(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv_1x1 = ConvBN(cin, cout, 1)
            self.se = nn.ModuleList([nn.Conv2d(cout, cout, 1, bias=False) for _ in range(2)])

        def forward(self, a, b):
            f = self.conv_1x1(t.cat([a, b], 1))
            s = self.se[1](F.relu(self.se[0](f.mean((2, 3), keepdim=True))))
            return f + f * s.sigmoid()

    class Head(nn.Module):
        def __init__(self, cin, mid):
            super().__init__()
            self.conv_3x3 = ConvBN(cin, mid, 3)
            self.conv_1x1 = nn.Conv2d(mid, num_classes, 1)

        def forward(self, x):
            return self.conv_1x1(self.conv_3x3(x))

    class SpatialPath(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_7x7 = ConvBN(3, 64, 7, 2)
            self.conv_3x3_1 = ConvBN(64, 64, 3, 2)
            self.conv_3x3_2 = ConvBN(64, 64, 3, 2)
            self.conv_1x1 = ConvBN(64, 128, 1)

        def forward(self, x):
            return self.conv_1x1(self.conv_3x3_2(self.conv_3x3_1(self.conv_7x7(x))))

    if backbone == "xception39":
        taps, (c16, c32), aux_mid = ("layer1", "layer2", "layer3"), (128, 256), 128
    else:
        taps, (c16, c32), aux_mid = ("layer2", "layer3", "layer4"), (256, 512), 256

    class BiSeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.spatial_path = SpatialPath()
            if backbone == "xception39":
                self.context_path = torch_xception39()
            else:
                self.context_path = tv.models._utils.IntermediateLayerGetter(
                    tv.models.resnet18(), {k: k for k in taps}
                )
            self.global_context = ConvBN(c32, 128, 1)
            self.arms = nn.ModuleList([ARM(c32, 128), ARM(c16, 128)])
            self.refines = nn.ModuleList([ConvBN(128, 128, 3), ConvBN(128, 128, 3)])
            self.ffm = FFM(256, 256)
            heads = [Head(128, aux_mid), Head(128, aux_mid), Head(256, 64)]
            self.heads = nn.ModuleList(heads)

        def forward(self, x):
            size = x.shape[2:]
            sp = self.spatial_path(x)
            f = dict(zip(("8", "16", "32"), (self.context_path(x)[k] for k in taps), strict=True))
            last = self.global_context(f["32"].mean((2, 3), keepdim=True))
            outs = []
            for i, (fm, below) in enumerate([(f["32"], f["16"]), (f["16"], f["8"])]):
                fm = self.arms[i](fm) + last
                last = self.refines[i](up(fm, below.shape[2:]))
                outs.append(last)
            fused = self.ffm(sp, last)
            return {
                "out": up(self.heads[2](fused), size),
                "context16": up(self.heads[0](outs[0]), size),
                "context8": up(self.heads[1](outs[1]), size),
            }

    return BiSeNet()


@pytest.mark.parametrize("backbone", ["resnet18", "xception39"])
def test_bisenetv1_matches_torch_twin(backbone, tmp_path):
    """Main logits, both context heads and the input gradient, through a saved .pth."""
    torch().manual_seed(0)
    ref = _torch_bisenetv1(5, backbone)
    model = BiSeNetV1(5, backbone, aux_head=True)
    assert sum(p.numel() for p in ref.parameters()) == _count(model)
    x = np.random.default_rng(0).standard_normal((1, 67, 45, 3)).astype(np.float32)
    check_parity(model, ref, x, tmp_path, record=f"BiSeNetV1 ({backbone}): TorchSeg twin")


def test_bisenetv2_counts_as_hand_sums_and_shapes():
    cbr = lambda k, cin, cout: _conv(k, cin, cout) + 2 * cout  # noqa: E731
    dw = lambda c: 9 * c + 2 * c  # noqa: E731  depthwise 3x3 + BN

    def ge(cin, cout, stride):
        mid = 6 * cin
        n = cbr(3, cin, cin) + 9 * mid + 2 * mid + _conv(1, mid, cout) + 2 * cout
        if stride == 2:
            n += dw(mid) + dw(cin) + _conv(1, cin, cout) + 2 * cout
        return n

    detail = (
        cbr(3, 3, 64) + cbr(3, 64, 64) + cbr(3, 64, 64) + 2 * cbr(3, 64, 64)
        + cbr(3, 64, 128) + 2 * cbr(3, 128, 128)
    )  # fmt: skip
    stem = cbr(3, 3, 16) + cbr(1, 16, 8) + cbr(3, 8, 16) + cbr(3, 32, 16)
    semantic = ge(16, 32, 2) + ge(32, 32, 1) + ge(32, 64, 2) + ge(64, 64, 1)
    semantic += ge(64, 128, 2) + 3 * ge(128, 128, 1)
    ce = 2 * 128 + cbr(1, 128, 128) + cbr(3, 128, 128)
    bga = 2 * (dw(128) + _conv(1, 128, 128)) + 2 * (_conv(3, 128, 128) + 256) + cbr(3, 128, 128)
    head = cbr(3, 128, 1024) + _conv(1, 1024, 19, True)
    total = detail + stem + semantic + ce + bga + head
    assert total == 3_358_627
    assert _count(BiSeNetV2(19)) == total
    boosters = sum(cbr(3, c, 128) + _conv(1, 128, 19, True) for c in (16, 32, 64, 128))
    assert _count(BiSeNetV2(19, aux_head=True)) == total + boosters == 3_645_935
    x = jnp.zeros((2, 37, 45, 3))
    model = BiSeNetV2(3, aux_head=True, dtype=jnp.bfloat16)
    logits, aux = jax.eval_shape(lambda v: model.apply(v, x), _shapes(model, x))
    assert logits.shape == (2, 37, 45, 3) and logits.dtype == jnp.float32
    assert sorted(aux) == ["s3", "s4", "s5", "stem"]
    assert all(a.shape == (2, 37, 45, 3) for a in aux.values())


def test_paper_figures_are_float32_sizes_in_mib():
    for count, paper in ((BISENETV1_X39_NO_AUX, 5.8), (BISENETV1_R18_NO_AUX, 49.0)):
        assert count / paper / 1e6 < 0.27  # as parameter counts they are 3.8x too large
        assert abs(count * 4 / 2**20 / paper - 1) < 0.015  # as MiB of float32 they fit
