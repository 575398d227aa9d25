"""Semantic FPN against a PyTorch twin of mmsegmentation's FPN neck and FPNHead on
torchvision's ResNet-18, through a saved state dict (forward and input gradient)."""

import numpy as np

from jaxseg.models.semantic_fpn import SemanticFPN
from tests.torch_support import check_parity, torch, torchvision


def _torch_semantic_fpn(num_classes):
    """mmsegmentation's mmseg/models/necks/fpn.py @ 09f0a1d5 (FPN: 1x1 lateral and 3x3 output
    ConvModules with bias and no norm, top-down sums with nearest upsampling to the lower
    level's size, 4 outputs, no extra convs) and mmseg/models/decode_heads/fpn_head.py @
    168c8831 (per level max(1, log2(stride/4)) ConvModules 3x3 conv + BN + ReLU to 128, each
    followed by 2x bilinear upsampling above stride 4; sum with bilinear resize to the stride-4
    map; dropout; 1x1 conv_seg), configured as configs/_base_/models/fpn_r50.py (256/128
    channels); the segmentor's bilinear resize of the logits to the input. mmcv's ConvModule is
    written out with its attribute names (conv, bn), so the keys are mmseg's. The backbone is
    torchvision's ResNet-18 (mmseg's config uses ResNetV1c), as the Flax model's."""
    t, tv = torch(), torchvision()
    nn, F = t.nn, t.nn.functional

    def up(x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    class ConvModule(nn.Module):
        def __init__(self, cin, cout, k, norm):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=not norm)
            self.bn = nn.BatchNorm2d(cout) if norm else None

        def forward(self, x):
            return F.relu(self.bn(self.conv(x))) if self.bn is not None else self.conv(x)

    class Upsample(nn.Module):  # mmseg.ops.Upsample(scale_factor=2): resize to 2x the size
        def forward(self, x):
            return up(x, (2 * x.shape[2], 2 * x.shape[3]))

    class FPN(nn.Module):
        def __init__(self, widths):
            super().__init__()
            self.lateral_convs = nn.ModuleList([ConvModule(c, 256, 1, False) for c in widths])
            self.fpn_convs = nn.ModuleList([ConvModule(256, 256, 3, False) for _ in widths])

        def forward(self, feats):
            laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats, strict=True)]
            for i in range(len(laterals) - 1, 0, -1):
                size = laterals[i - 1].shape[2:]
                laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=size)
            return [conv(x) for conv, x in zip(self.fpn_convs, laterals, strict=True)]

    class FPNHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale_heads = nn.ModuleList()
            for i, stride in enumerate((4, 8, 16, 32)):
                layers = []
                for k in range(max(1, i)):
                    layers.append(ConvModule(256 if k == 0 else 128, 128, 3, True))
                    if stride != 4:
                        layers.append(Upsample())
                self.scale_heads.append(nn.Sequential(*layers))
            self.conv_seg = nn.Conv2d(128, num_classes, 1)

        def forward(self, levels):
            out = self.scale_heads[0](levels[0])
            for head, x in zip(self.scale_heads[1:], levels[1:], strict=True):
                out = out + up(head(x), out.shape[2:])
            return self.conv_seg(out)  # dropout: identity in eval mode

    class SemanticFPN(nn.Module):
        def __init__(self):
            super().__init__()
            taps = {f"layer{i}": f"layer{i}" for i in range(1, 5)}
            self.backbone = tv.models._utils.IntermediateLayerGetter(tv.models.resnet18(), taps)
            self.neck = FPN((64, 128, 256, 512))
            self.decode_head = FPNHead()

        def forward(self, x):
            feats = list(self.backbone(x).values())
            return up(self.decode_head(self.neck(feats)), x.shape[2:])

    return SemanticFPN()


def test_semantic_fpn_matches_mmseg_twin(tmp_path):
    """Odd size (45 x 38): the top-down nearest upsampling goes 2 -> 3 -> 6 -> 12 rows."""
    torch().manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 45, 38, 3)).astype(np.float32)
    check_parity(
        SemanticFPN(5, "resnet18"),
        _torch_semantic_fpn(5),
        x,
        tmp_path,
        record="Semantic FPN: twin of mmseg necks/fpn.py @ 09f0a1d5 + "
        "decode_heads/fpn_head.py @ 168c8831",
    )
