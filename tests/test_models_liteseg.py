"""LiteSeg-MobileNet: the paper's parameter count, shapes at odd sizes, and forward parity
with a PyTorch twin of the authors' release (tahaemara/LiteSeg models/liteseg_mobilenet.py
and models/aspp.py @ d7ec80bb) on torchvision's MobileNetV2."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models import pretrained
from jaxseg.models.liteseg import LiteSeg
from jaxseg.state import count_params
from tests.torch_support import check_parity, torch, torchvision


def _shapes(model, x):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def test_count_is_the_papers_with_the_unused_classifier():
    count = count_params(_shapes(LiteSeg(19), jnp.zeros((1, 64, 64, 3)))["params"])
    sep = lambda k, cin, cout: k * k * cin + cin * cout  # noqa: E731  depthwise + pointwise
    head = sep(1, 1280, 96) + 192  # rate-1 branch
    head += 3 * (sep(3, 1280, 96) + 192 + sep(3, 96, 96) + 192)  # rates 3, 6, 9
    head += 1280 * 96 + 192 + sep(1, 1760, 96) + 192  # image pooling, long residual
    head += sep(3, 120, 96) + 192 + sep(3, 96, 96) + 192 + 96 * 19 + 19  # decoder
    assert count == 2_223_872 + head == 3_101_707  # torchvision mobilenet_v2 features
    # Emara et al. 2019, Table 3: LiteSeg-MobileNet 4.38 M, which counts the release's
    # unused MobileNetV2 ImageNet classifier (Linear 1280 -> 1000).
    assert count + 1280 * 1000 + 1000 == 4_382_707


def test_logits_at_odd_size():
    x = jnp.zeros((2, 37, 45, 3))
    model = LiteSeg(3, dtype=jnp.bfloat16)
    logits, aux = jax.eval_shape(lambda v: model.apply(v, x), _shapes(model, x))
    assert logits.shape == (2, 37, 45, 3) and logits.dtype == jnp.float32 and aux == {}


def test_matches_torch_twin_and_imagenet_file_fills_the_backbone(tmp_path):
    t, tv = torch(), torchvision()
    nn, F = t.nn, t.nn.functional
    t.manual_seed(0)

    class Sep(nn.Module):
        def __init__(self, cin, cout, k=1, d=1):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cin, k, 1, d * (k // 2), d, groups=cin, bias=False)
            self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

        def forward(self, x):
            return self.pointwise(self.conv1(x))

    class Branch(nn.Module):
        def __init__(self, rate):
            super().__init__()
            self.rate = rate
            self.atrous_convolution = Sep(1280, 96, 1 if rate == 1 else 3, rate)
            self.bn = nn.BatchNorm2d(96)
            if rate > 1:
                self.conv1, self.bn1 = Sep(96, 96, 3), nn.BatchNorm2d(96)

        def forward(self, x):
            x = self.bn(self.atrous_convolution(x))
            return x if self.rate == 1 else F.relu(self.bn1(self.conv1(x)))

    class Twin(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.backbone = tv.models.mobilenet_v2().features
            for i, r in enumerate((1, 3, 6, 9), start=1):
                setattr(self, f"aspp{i}", Branch(r))
            self.global_avg_pool = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(1280, 96, 1, bias=False), nn.BatchNorm2d(96)
            )
            self.conv1, self.bn1 = Sep(1760, 96), nn.BatchNorm2d(96)
            self.last_conv = nn.Sequential(
                Sep(120, 96, 3), nn.BatchNorm2d(96), nn.ReLU(),
                Sep(96, 96, 3), nn.BatchNorm2d(96), nn.ReLU(), nn.Conv2d(96, k, 1),
            )  # fmt: skip

        def forward(self, x):
            size, y = x.shape[2:], x
            low = self.backbone[:4](y)
            y = self.backbone[4:](low)
            g = F.relu(self.global_avg_pool(y)).expand(-1, -1, *y.shape[2:])
            y = t.cat([y, *(getattr(self, f"aspp{i}")(y) for i in range(1, 5)), g], 1)
            y = F.relu(self.bn1(self.conv1(y)))
            y = F.interpolate(y, low.shape[2:], mode="bilinear", align_corners=False)
            y = self.last_conv(t.cat([y, low], 1))
            return F.interpolate(y, size, mode="bilinear", align_corners=False)

    x = np.random.default_rng(0).standard_normal((1, 67, 45, 3)).astype(np.float32)
    model = LiteSeg(5)
    check_parity(model, Twin(5), x, tmp_path, record="LiteSeg (MobileNetV2): twin")
    imagenet = {k: v.detach().numpy() for k, v in tv.models.mobilenet_v2().state_dict().items()}
    imagenet = LiteSeg.adapt_state_dict({k: v for k, v in imagenet.items() if v.ndim > 0})
    _, report = pretrained.convert_state_dict(_shapes(model, x), imagenet)
    assert len(report["loaded"]) == len(imagenet) and report["mismatched"] == []
