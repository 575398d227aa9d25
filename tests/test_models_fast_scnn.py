"""Fast-SCNN: forward and input-gradient parity with a PyTorch twin of the common port,
through its saved state dict (skips without torch). Counts and shapes are pinned in
tests/test_models_mobile.py."""

import numpy as np

from jaxseg.models.fast_scnn import FastSCNN
from tests.torch_support import check_parity, torch


def torch_fast_scnn(num_classes, fusion_dilation=1, first_padding=0, align_corners=True):
    """Tramac/Fast-SCNN-pytorch models/fast_scnn.py @ 03b91fbb27638c6db84742f51ed24f9c3798951c
    (FastSCNN with aux=False), rewritten with its module names. The keyword arguments are
    the three places where jaxseg follows the paper or its own conventions instead, the
    port's values as defaults: the fusion's depthwise conv dilated 4 (Table 3; the port: 1),
    the first conv padded 1 (the port: 0, a border row and column lost), and bilinear
    resizes with align_corners=False to the target map's size (the port: True, the fusion
    by a fixed factor 4, which equals the size where sides are multiples of 32)."""
    t = torch()
    nn, F = t.nn, t.nn.functional

    def resize(x, size):
        return F.interpolate(x, size, mode="bilinear", align_corners=align_corners)

    def cbr(cin, cout, k=1, stride=1, padding=0, groups=1, dilation=1, relu=True, bias=False):
        layers = [nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=bias)]
        return [*layers, nn.BatchNorm2d(cout), *([nn.ReLU()] if relu else [])]

    class Seq(nn.Module):  # the port's _Conv, _DWConv, _DSConv: one Sequential "conv"
        def __init__(self, *layers):
            super().__init__()
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return self.conv(x)

    def dsconv(cin, cout, stride=1):
        return Seq(*cbr(cin, cin, 3, stride, 1, cin), *cbr(cin, cout))

    class LinearBottleneck(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            mid = 6 * cin
            self.use_shortcut = stride == 1 and cin == cout
            self.block = nn.Sequential(
                Seq(*cbr(cin, mid)),
                Seq(*cbr(mid, mid, 3, stride, 1, mid)),
                *cbr(mid, cout, relu=False),
            )

        def forward(self, x):
            return x + self.block(x) if self.use_shortcut else self.block(x)

    class PyramidPooling(nn.Module):
        def __init__(self, c):
            super().__init__()
            for i in range(1, 5):
                setattr(self, f"conv{i}", Seq(*cbr(c, c // 4)))
            self.out = Seq(*cbr(2 * c, c))

        def forward(self, x):
            feats = [x]
            for i, bins in enumerate((1, 2, 3, 6), start=1):
                y = getattr(self, f"conv{i}")(F.adaptive_avg_pool2d(x, bins))
                feats.append(resize(y, x.shape[2:]))
            return self.out(t.cat(feats, 1))

    class LearningToDownsample(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = Seq(*cbr(3, 32, 3, 2, first_padding))
            self.dsconv1 = dsconv(32, 48, 2)
            self.dsconv2 = dsconv(48, 64, 2)

        def forward(self, x):
            return self.dsconv2(self.dsconv1(self.conv(x)))

    def stage(cin, cout, stride):
        blocks = [LinearBottleneck(cin, cout, stride)]
        return nn.Sequential(*blocks, *(LinearBottleneck(cout, cout, 1) for _ in range(2)))

    class GlobalFeatureExtractor(nn.Module):
        def __init__(self):
            super().__init__()
            self.bottleneck1 = stage(64, 64, 2)
            self.bottleneck2 = stage(64, 96, 2)
            self.bottleneck3 = stage(96, 128, 1)
            self.ppm = PyramidPooling(128)

        def forward(self, x):
            return self.ppm(self.bottleneck3(self.bottleneck2(self.bottleneck1(x))))

    class FeatureFusionModule(nn.Module):
        def __init__(self):
            super().__init__()
            d = fusion_dilation
            self.dwconv = Seq(*cbr(128, 128, 3, 1, d, 128, d))
            self.conv_lower_res = nn.Sequential(*cbr(128, 128, relu=False, bias=True))
            self.conv_higher_res = nn.Sequential(*cbr(64, 128, relu=False, bias=True))

        def forward(self, high, low):
            low = self.conv_lower_res(self.dwconv(resize(low, high.shape[2:])))
            return F.relu(self.conv_higher_res(high) + low)

    class Classifer(nn.Module):  # sic: the port's name
        def __init__(self):
            super().__init__()
            self.dsconv1 = dsconv(128, 128)
            self.dsconv2 = dsconv(128, 128)
            self.conv = nn.Sequential(nn.Dropout(0.1), nn.Conv2d(128, num_classes, 1))

        def forward(self, x):
            return self.conv(self.dsconv2(self.dsconv1(x)))

    class FastSCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.learning_to_downsample = LearningToDownsample()
            self.global_feature_extractor = GlobalFeatureExtractor()
            self.feature_fusion = FeatureFusionModule()
            self.classifier = Classifer()

        def forward(self, x):
            high = self.learning_to_downsample(x)
            y = self.feature_fusion(high, self.global_feature_extractor(high))
            return resize(self.classifier(y), x.shape[2:])

    return FastSCNN()


def test_fast_scnn_matches_the_common_port(tmp_path):
    """At an odd size (45 x 61: stride 32 leaves 2 x 2, under PPM's 3 and 6 bins)."""
    torch().manual_seed(0)
    ref = torch_fast_scnn(5, fusion_dilation=4, first_padding=1, align_corners=False)
    x = np.random.default_rng(0).standard_normal((1, 45, 61, 3)).astype(np.float32)
    record = "Fast-SCNN: Tramac/Fast-SCNN-pytorch models/fast_scnn.py @ 03b91fb (twin)"
    check_parity(FastSCNN(5), ref, x, tmp_path, record=record)
