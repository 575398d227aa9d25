"""DeepLab v1 LargeFOV and DeepLab v2: parameter counts (the paper's and hand sums), the
output stride of DeepLab's VGG16, shapes at odd sizes, and both against PyTorch twins through
a saved state dict, forward and input gradient (v2's on torchvision's ResNet-18, LargeFOV's
after the authors' prototxt; skipped without torch)."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.deeplab_v2 import DeepLabLargeFOV, DeepLabV2
from jaxseg.models.vgg import VGG16
from jaxseg.state import count_params
from tests.torch_support import check_parity, torch, torchvision


def _shapes(model, x):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def _count(model):
    return count_params(_shapes(model, jnp.zeros((1, 64, 64, 3)))["params"])


def _conv(k, cin, cout):
    return k * k * cin * cout + cout  # with bias, as the Caffe nets


def test_largefov_count_is_the_papers():
    vgg16_convs = 14_714_688  # torchvision vgg16().features
    head = _conv(3, 512, 1024) + _conv(1, 1024, 1024) + _conv(1, 1024, 21)
    # Chen et al. 2015, Table 2: DeepLab-LargeFOV, 20.5 M parameters.
    assert _count(DeepLabLargeFOV(21)) == vgg16_convs + head == 20_505_429


def test_deeplabv2_counts_are_hand_sums():
    aspp = 4 * (9 * 2048 * 21 + 21)
    assert _count(DeepLabV2(21)) == 42_500_160 + aspp == 44_048_532  # torchvision R101 - fc
    assert _count(DeepLabV2(21, "resnet50")) == 23_508_032 + aspp


def test_deeplab_vgg_is_output_stride_8_at_odd_sizes():
    x = jnp.zeros((1, 67, 45, 3))
    vgg = VGG16(deeplab=True)
    feats = jax.eval_shape(lambda v: vgg.apply(v, x), _shapes(vgg, x))
    assert feats["pool5"].shape == (1, 9, 6, 512)  # ceil(67/8), ceil(45/8)
    for model in (DeepLabLargeFOV(3, dtype=jnp.bfloat16), DeepLabV2(3, "resnet18")):
        logits, aux = jax.eval_shape(lambda v, m=model: m.apply(v, x), _shapes(model, x))
        assert logits.shape == (1, 67, 45, 3) and logits.dtype == jnp.float32 and aux == {}


def test_deeplabv2_matches_torch_twin(tmp_path):
    """DeepLab v2's ASPP-L (four dilated 3x3 classifiers, summed) as kazuto1011/deeplab-pytorch
    libs/models/deeplabv2.py @ 9e7f8815 builds it, on torchvision's ResNet."""
    t, tv = torch(), torchvision()
    nn = t.nn
    t.manual_seed(0)

    class ASPP(nn.Module):
        def __init__(self):
            super().__init__()
            for i, r in enumerate((6, 12, 18, 24)):
                setattr(self, f"c{i}", nn.Conv2d(512, 5, 3, padding=r, dilation=r))

        def forward(self, x):
            return sum(getattr(self, f"c{i}")(x) for i in range(4))

    class V2(nn.Module):
        def __init__(self):
            super().__init__()
            resnet = tv.models.resnet18()
            # torchvision's BasicBlock refuses dilation; the twin dilates its convs by hand
            # as ours: a stage's first conv at the previous rate, the rest at the stage's.
            for name, rate in (("layer3", 2), ("layer4", 4)):
                layer = getattr(resnet, name)
                layer[0].conv1.stride = (1, 1)
                layer[0].downsample[0].stride = (1, 1)
                layer[0].conv1.dilation = layer[0].conv1.padding = (rate // 2,) * 2
                for conv in (layer[0].conv2, layer[1].conv1, layer[1].conv2):
                    conv.dilation = conv.padding = (rate, rate)
            self.backbone = tv.models._utils.IntermediateLayerGetter(resnet, {"layer4": "out"})
            self.aspp = ASPP()

        def forward(self, x):
            y = self.aspp(self.backbone(x)["out"])
            return nn.functional.interpolate(y, x.shape[2:], mode="bilinear", align_corners=False)

    x = np.random.default_rng(0).standard_normal((1, 49, 61, 3)).astype(np.float32)
    check_parity(
        DeepLabV2(5, "resnet18"),
        V2(),
        x,
        tmp_path,
        record="DeepLab v2: twin (torchvision ResNet-18 dilated, ASPP-v2 as kazuto1011)",
    )


def _torch_largefov(num_classes):
    """DeepLab-LargeFOV as the authors' Caffe train.prototxt (DeepLab v1,
    http://www.cs.jhu.edu/~alanlab/ccvl/DeepLab-LargeFOV/train.prototxt; no commit: not in a
    repository), on torchvision's vgg16 `features` (keys backbone.features.N): 3x3 max-pools
    padded by 1 at stride 2, 2, 2, 1, 1, conv5_x dilated 2, "pool5a" 3x3 average pooling
    (stride 1, padding 1), fc6 3x3 dilation 12 -> 1024, fc7 1x1, fc8 1x1 (ReLU after fc6
    and fc7, dropout off in eval). Two conventions are ours, not Caffe's: pooling in floor
    mode (Caffe's ceil mode adds a row at even sides) and the final bilinear resize with
    align_corners=False (Caffe's Interp layer aligns corners)."""
    t, tv = torch(), torchvision()
    nn, F = t.nn, t.nn.functional
    features = tv.models.vgg16().features
    for index, stride in ((4, 2), (9, 2), (16, 2), (23, 1), (30, 1)):
        features[index] = nn.MaxPool2d(3, stride, padding=1)
    for index in (24, 26, 28):
        features[index].dilation = features[index].padding = (2, 2)

    class LargeFOV(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Module()
            self.backbone.features = features
            self.fc6 = nn.Conv2d(512, 1024, 3, padding=12, dilation=12)
            self.fc7 = nn.Conv2d(1024, 1024, 1)
            self.fc8 = nn.Conv2d(1024, num_classes, 1)
            for m in (self.fc6, self.fc7, self.fc8):  # He init: O(1) logits (see the test)
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

        def forward(self, x):
            y = F.avg_pool2d(self.backbone.features(x), 3, 1, padding=1)
            y = self.fc8(F.relu(self.fc7(F.relu(self.fc6(y)))))
            return F.interpolate(y, x.shape[2:], mode="bilinear", align_corners=False)

    return LargeFOV()


def test_largefov_matches_the_prototxt_twin(tmp_path):
    """Odd size 35 x 29: pool5 is 5 x 4, so fc6's dilation-12 taps read only padding off
    the centre, as at 321 x 321 (41 x 41) they do near the borders."""
    torch().manual_seed(0)
    # Mean-subtracted 0-255 pixels, as the Caffe net takes, and He-initialised fc6-fc8: the
    # random-weight logits are then O(1) (~0.03 at unit scale and torch's default init, which
    # would loosen the 1e-4 absolute bound).
    x = 50 * np.random.default_rng(0).standard_normal((1, 35, 29, 3)).astype(np.float32)
    check_parity(
        DeepLabLargeFOV(5),
        _torch_largefov(5),
        x,
        tmp_path,
        record="DeepLab-LargeFOV: twin of the authors' DeepLab-LargeFOV/train.prototxt",
    )
