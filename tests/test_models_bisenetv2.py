"""BiSeNet V2: forward and input-gradient parity, main and booster heads, with a PyTorch
twin of the widely used implementation through its saved state dict (skips without
torch). Counts and shapes are pinned in tests/test_models_bisenet.py."""

import jax
import numpy as np

from jaxseg.models.bisenetv2 import BiSeNetV2
from jaxseg.models.pretrained import load_pretrained
from tests.torch_support import check_parity, torch

RELEASE = "CoinCheung/BiSeNet lib/models/bisenetv2.py @ 08e0726"


def torch_bisenetv2(num_classes, dw_relu=True, bga_mode="nearest", booster_up=True):
    """CoinCheung/BiSeNet lib/models/bisenetv2.py @ 08e0726f42094ef8f0af08d340ee73bf338d54a5
    (the authors released no code), rewritten with its module names; outputs (logits,
    aux2, aux3, aux4, aux5_4) as its aux_mode="train". The keyword arguments are the three
    places where it departs from the paper, which jaxseg follows, its values as defaults:
    a ReLU after the GE layers' last depthwise conv ("not shown in paper"), nearest 4x
    upsampling in the BGA layer (nn.Upsample's default; the paper does not say, jaxseg
    resizes bilinearly), and booster heads with a 2x upsampling and an extra ConvBNReLU."""
    t = torch()
    nn, F = t.nn, t.nn.functional

    class ConvBNReLU(nn.Module):
        def __init__(self, cin, cout, k=3, stride=1):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(cout)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    def conv_bn(cin, cout, k=3, stride=1, groups=1):
        return [
            nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]

    def relu():
        return [nn.ReLU()] if dw_relu else []

    class StemBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = ConvBNReLU(3, 16, 3, 2)
            self.left = nn.Sequential(ConvBNReLU(16, 8, 1), ConvBNReLU(8, 16, 3, 2))
            self.fuse = ConvBNReLU(32, 16)

        def forward(self, x):
            x = self.conv(x)
            return self.fuse(t.cat([self.left(x), F.max_pool2d(x, 3, 2, 1)], 1))

    class CEBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(128)
            self.conv_gap = ConvBNReLU(128, 128, 1)
            self.conv_last = ConvBNReLU(128, 128)

        def forward(self, x):
            return self.conv_last(x + self.conv_gap(self.bn(x.mean((2, 3), keepdim=True))))

    class GELayerS1(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = ConvBNReLU(c, c)
            self.dwconv = nn.Sequential(*conv_bn(c, 6 * c, groups=c), *relu())
            self.conv2 = nn.Sequential(*conv_bn(6 * c, c, 1))

        def forward(self, x):
            return F.relu(self.conv2(self.dwconv(self.conv1(x))) + x)

    class GELayerS2(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            mid = 6 * cin
            self.conv1 = ConvBNReLU(cin, cin)
            self.dwconv1 = nn.Sequential(*conv_bn(cin, mid, 3, 2, cin))
            self.dwconv2 = nn.Sequential(*conv_bn(mid, mid, groups=mid), *relu())
            self.conv2 = nn.Sequential(*conv_bn(mid, cout, 1))
            self.shortcut = nn.Sequential(*conv_bn(cin, cin, 3, 2, cin), *conv_bn(cin, cout, 1))

        def forward(self, x):
            y = self.conv2(self.dwconv2(self.dwconv1(self.conv1(x))))
            return F.relu(y + self.shortcut(x))

    class DetailBranch(nn.Module):
        def __init__(self):
            super().__init__()
            plan = {"S1": (3, 64, 64), "S2": (64, 64, 64, 64), "S3": (64, 128, 128, 128)}
            for name, w in plan.items():
                layers = [
                    ConvBNReLU(a, b, 3, 2 if i == 0 else 1)
                    for i, (a, b) in enumerate(zip(w, w[1:], strict=False))
                ]
                setattr(self, name, nn.Sequential(*layers))

        def forward(self, x):
            return self.S3(self.S2(self.S1(x)))

    class SegmentBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.S1S2 = StemBlock()
            self.S3 = nn.Sequential(GELayerS2(16, 32), GELayerS1(32))
            self.S4 = nn.Sequential(GELayerS2(32, 64), GELayerS1(64))
            self.S5_4 = nn.Sequential(GELayerS2(64, 128), *(GELayerS1(128) for _ in range(3)))
            self.S5_5 = CEBlock()

        def forward(self, x):
            feats = [self.S1S2(x)]
            for stage in (self.S3, self.S4, self.S5_4):
                feats.append(stage(feats[-1]))
            return feats + [self.S5_5(feats[-1])]

    def up4(x):
        if bga_mode == "nearest":
            return F.interpolate(x, scale_factor=4)
        return F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)

    class BGALayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.left1 = nn.Sequential(
                *conv_bn(128, 128, groups=128), nn.Conv2d(128, 128, 1, bias=False)
            )
            self.left2 = nn.Sequential(*conv_bn(128, 128, 3, 2), nn.AvgPool2d(3, 2, 1))
            self.right1 = nn.Sequential(*conv_bn(128, 128))
            self.right2 = nn.Sequential(
                *conv_bn(128, 128, groups=128), nn.Conv2d(128, 128, 1, bias=False)
            )
            self.conv = nn.Sequential(*conv_bn(128, 128), nn.ReLU())

        def forward(self, d, s):
            left = self.left1(d) * up4(self.right1(s)).sigmoid()
            right = up4(self.left2(d) * self.right2(s).sigmoid())
            return self.conv(left + right)

    class SegmentHead(nn.Module):
        def __init__(self, cin, mid, factor, aux):
            super().__init__()
            self.conv = ConvBNReLU(cin, mid)
            mid2 = factor * factor if aux else mid
            first = (
                nn.Sequential(nn.Upsample(scale_factor=2), ConvBNReLU(mid, mid2))
                if aux
                else nn.Identity()
            )
            self.conv_out = nn.Sequential(
                first,
                nn.Conv2d(mid2, num_classes, 1),
                nn.Upsample(
                    scale_factor=factor // 2 if aux else factor,
                    mode="bilinear",
                    align_corners=False,
                ),
            )

        def forward(self, x):
            return self.conv_out(self.conv(x))

    class BiSeNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            self.detail = DetailBranch()
            self.segment = SegmentBranch()
            self.bga = BGALayer()
            self.head = SegmentHead(128, 1024, 8, False)
            self.aux2 = SegmentHead(16, 128, 4, booster_up)
            self.aux3 = SegmentHead(32, 128, 8, booster_up)
            self.aux4 = SegmentHead(64, 128, 16, booster_up)
            self.aux5_4 = SegmentHead(128, 128, 32, booster_up)

        def forward(self, x):
            feat2, feat3, feat4, feat5_4, feat_s = self.segment(x)
            logits = self.head(self.bga(self.detail(x), feat_s))
            heads = (self.aux2, self.aux3, self.aux4, self.aux5_4)
            return (
                logits,
                *(h(f) for h, f in zip(heads, (feat2, feat3, feat4, feat5_4), strict=True)),
            )

    return BiSeNetV2()


def test_bisenetv2_matches_the_common_implementation(tmp_path):
    """At 64 x 96, the smallest the twin's fixed upsampling factors allow (sides multiples of
    32); the booster heads compared too, from the same file."""
    t = torch()
    t.manual_seed(0)
    ref = torch_bisenetv2(5, dw_relu=False, bga_mode="bilinear", booster_up=False)
    model = BiSeNetV2(5, aux_head=True)
    x = np.random.default_rng(0).standard_normal((1, 64, 96, 3)).astype(np.float32)
    check_parity(model, ref, x, tmp_path, record=f"BiSeNetV2: {RELEASE} (twin)")
    # check_parity left the twin in eval mode with its random BatchNorm statistics, saved.
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    variables = load_pretrained(model, shapes, tmp_path / "reference.pth", lambda _: None)
    _, aux = jax.jit(model.apply)(variables, x)
    with t.no_grad():
        outs = ref(t.from_numpy(x.transpose(0, 3, 1, 2)))[1:]
    for key, out in zip(("stem", "s3", "s4", "s5"), outs, strict=True):
        expected = out.numpy().transpose(0, 2, 3, 1)
        assert np.abs(np.asarray(aux[key]) - expected).max() <= 1e-4, key
