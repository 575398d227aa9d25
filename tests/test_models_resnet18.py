"""ResNet-18/34 (BasicBlock) backbones and the heads on them: exact parameter counts, the
dilated BasicBlock as the exact atrous rewrite of the strided network, and parity with
torchvision's resnet18 (skipped without torch).

Variables come from eval_shape plus numpy draws (jax's init compiles for long on 2 cores).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import pretrained
from jaxseg.models.deeplab import DeepLabV3, DeepLabV3Plus
from jaxseg.models.fcn import FCN
from jaxseg.models.pspnet import PSPNet
from jaxseg.models.resnet import ResNet, widths
from jaxseg.state import count_params
from tests.torch_support import (
    assert_close_relative,
    randomize_batch_norm,
    state_dict_numpy,
    torch,
    torchvision,
)

# torchvision resnet18 / resnet34: 11,689,512 / 21,797,672 parameters, of which the fc
# layer (512*1000 + 1000) holds 513,000.
R18, R34 = 11_689_512 - 513_000, 21_797_672 - 513_000


def _shapes(model, x):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def _count(model, size=(64, 64)):
    return count_params(_shapes(model, jnp.zeros((1, *size, 3)))["params"])


def _conv(k, cin, cout, bias=False):
    return k * k * cin * cout + (cout if bias else 0)


def _random_variables(model, x, seed=0):
    rng = np.random.default_rng(seed)

    def fill(path, s):
        leaf = path[-1].key
        if leaf == "kernel":
            return rng.standard_normal(s.shape, np.float32) * math.sqrt(2 / np.prod(s.shape[:-1]))
        if leaf in ("scale", "var"):
            return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
        return rng.normal(0, 0.1, s.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, _shapes(model, x))


def test_basic_resnet_counts_equal_torchvision_without_fc():
    assert _count(ResNet("resnet18")) == R18 == 11_176_512
    assert _count(ResNet("resnet34")) == R34 == 21_284_672
    assert widths("resnet18") == (64, 128, 256, 512)
    assert widths("resnet101") == (256, 512, 1024, 2048)


def test_heads_on_resnet18_count_as_hand_sums():
    # ASPP on 512 channels: 1x1, three 3x3, pooling 1x1, projection 1280 -> 256, 5 BNs.
    aspp = 2 * _conv(1, 512, 256) + 3 * _conv(3, 512, 256) + _conv(1, 1280, 256) + 6 * 512
    low = _conv(1, 64, 48) + 96
    decoder = _conv(3, 304, 256) + _conv(3, 256, 256) + 2 * 512 + _conv(1, 256, 5, True)
    assert _count(DeepLabV3Plus(5, "resnet18")) == R18 + aspp + low + decoder == 16_604_069
    aux = _conv(3, 256, 64) + 128 + _conv(1, 64, 5, True)
    fcn = _conv(3, 512, 128) + 256 + _conv(1, 128, 5, True)
    assert _count(FCN(5, "resnet18", aux_head=True)) == R18 + fcn + aux
    head = _conv(3, 256, 256) + 512 + _conv(1, 256, 5, True)
    assert _count(DeepLabV3(5, "resnet18", aux_head=True)) == R18 + aspp + head + aux
    # PSPNet: C/4 = 128 per pyramid level and in the 3x3 bottleneck (2C = 1024 in).
    psp = 4 * (_conv(1, 512, 128) + 256) + _conv(3, 1024, 128) + 256 + _conv(1, 128, 5, True)
    assert _count(PSPNet(5, "resnet18", aux_head=True)) == R18 + psp + aux


@pytest.mark.parametrize("backbone", ["resnet18", pytest.param("resnet34", marks=pytest.mark.slow)])
def test_dilated_basic_resnet_is_the_strided_one_sampled(backbone):
    # The atrous rewrite is exact: at output stride 8, layer4 sampled every 4th pixel is
    # layer4 of the undilated network (odd sides included: torch's ceil-rounded strides).
    x = jnp.asarray(np.random.default_rng(1).standard_normal((1, 67, 45, 3), np.float32))
    strided = ResNet(backbone, 32)
    variables = _random_variables(strided, x)
    a = jax.jit(strided.apply)(variables, x)
    for stride, step in ((16, 2), (8, 4)):
        b = jax.jit(ResNet(backbone, stride).apply)(variables, x)
        assert_close_relative(b["layer4"][:, ::step, ::step], a["layer4"], 1e-5)
        assert b["layer4"].shape[1:3] == (-(-67 // stride), -(-45 // stride))
    if backbone == "resnet18":  # multi_grid (1, 2) on layer4's two blocks: same shapes
        b = jax.jit(ResNet(backbone, 16, multi_grid=(1, 2)).apply)(variables, x)
        assert b["layer4"].shape == (1, 5, 3, 512)


def _nchw(x):
    return torch().from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(y):
    return y.detach().numpy().transpose(0, 2, 3, 1)


def test_resnet18_features_and_imagenet_import_match_torchvision():
    t, tv = torch(), torchvision()
    t.manual_seed(0)
    ref = tv.models.resnet18().eval()
    randomize_batch_norm(ref)
    x = np.random.default_rng(0).standard_normal((1, 49, 61, 3)).astype(np.float32)
    model = ResNet("resnet18")
    state = state_dict_numpy(ref)
    variables, report = pretrained.convert_state_dict(_shapes(model, x), state)
    assert report["missing"] == [] and report["mismatched"] == []
    assert report["unused"] == ["fc.bias", "fc.weight"]
    ours = jax.jit(model.apply)(variables, x)
    getter = tv.models._utils.IntermediateLayerGetter(
        ref, {"relu": "stem", "layer1": "layer1", "layer4": "layer4"}
    )
    with t.no_grad():
        theirs = getter(_nchw(x))
    for key in ("stem", "layer1", "layer4"):
        assert_close_relative(ours[key], _nhwc(theirs[key]), 1e-4)
    # The ImageNet file fills a segmentation model's backbone ("backbone." prefix dropped)
    # and leaves the heads new.
    seg = DeepLabV3Plus(5, "resnet18")
    _, report = pretrained.convert_state_dict(_shapes(seg, x), state)
    assert report["mismatched"] == [] and report["unused"] == ["fc.bias", "fc.weight"]
    assert len(report["loaded"]) == len(state) - 2
    assert all(not k.startswith("backbone.") for k in report["missing"])
