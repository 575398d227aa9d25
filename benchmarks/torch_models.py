"""PyTorch twins of jaxseg's models that torchvision lacks, for the throughput reference.

Same architectures as jaxseg.models (parameter counts equal; tests/test_torch_reference.py
checks them), written as standard implementations, NCHW:

- UNet: jaxseg.models.unet.UNet (BatchNorm double convs, 2x2 transposed-conv up path or
  bilinear + 1x1 conv).
- DeepLabV3Plus: ResNet-50/101 at output stride 16 (or 8), torchvision's ASPP with rates
  (6, 12, 18) scaled by 16 / output_stride, 48-channel 1x1 projection of layer1, two 3x3
  conv 256 + BN + ReLU, 1x1 classifier, bilinear upsampling (jaxseg.models.deeplab).
- PSPNet: dilated ResNet at output stride 8, pyramid pooling (1, 2, 3, 6) to 512 channels
  each, 3x3 conv 512 + BN + ReLU, dropout 0.1, 1x1 classifier; FCN auxiliary head on
  layer3 (jaxseg.models.pspnet).
- SegFormer: MiT-B0..B5 encoder (overlapping patch embeddings, efficient self-attention
  with sequence reduction 8/4/2/1, Mix-FFN with a 3x3 depthwise conv, stochastic depth
  0.1) and the all-MLP decoder (jaxseg.models.segformer).

`build(name, num_classes, **options)` also returns torchvision's fcn_resnet50/101,
deeplabv3_resnet50/101 and lraspp_mobilenet_v3_large for those names. Every model
returns {"out": logits [B,K,H,W] at input size, "aux": ... with an aux head}, as
torchvision's segmentation models do.

PyPI's torchvision wheels are CUDA builds whose compiled ops do not load against the CPU
torch; `import_torchvision()` stubs out the module that registers them (the models are
plain Python), as tests/torch_support.py does for the parity tests.
"""

from __future__ import annotations

import sys
import types

import torch
import torch.nn.functional as F
from torch import nn


def import_torchvision():
    """torchvision, importable even where its compiled ops fail to load (CPU torch)."""
    try:
        import torchvision
    except (RuntimeError, ImportError):
        for name in [n for n in sys.modules if n.startswith("torchvision")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("stub")
        import torchvision
    return torchvision


def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


# ---- U-Net --------------------------------------------------------------------------------


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(*_conv_bn_relu(cin, cout, 3), *_conv_bn_relu(cout, cout, 3))


class UNet(nn.Module):
    """x [B,C,H,W] (any H, W: padded to a multiple of 2**depth, cropped back)."""

    def __init__(
        self,
        num_classes: int,
        base_width: int = 64,
        depth: int = 4,
        up_mode: str = "transpose",
        in_channels: int = 3,
    ):
        super().__init__()
        if up_mode not in ("transpose", "bilinear"):
            raise ValueError(f"up_mode={up_mode!r}; valid: transpose, bilinear")
        self.depth, self.up_mode = depth, up_mode
        widths = [base_width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for width in widths:
            self.down.append(DoubleConv(cin, width))
            cin = width
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for level in reversed(range(depth)):
            if up_mode == "transpose":
                self.up.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
            else:
                self.up.append(nn.Conv2d(widths[level + 1], widths[level], 1))
            self.dec.append(DoubleConv(2 * widths[level], widths[level]))
        self.head = nn.Conv2d(base_width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict:
        h, w = x.shape[-2:]
        m = 2**self.depth
        x = F.pad(x, (0, -w % m, 0, -h % m))
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            if self.up_mode == "bilinear":
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = dec(torch.cat([skip, up(x)], dim=1))
        return {"out": self.head(x)[..., :h, :w]}


# ---- ResNet-based: DeepLabV3+, PSPNet -------------------------------------------------------


def dilated_resnet(name: str, output_stride: int) -> nn.Module:
    """torchvision's ResNet-50/101 with layer4 (OS16) or layers 3 and 4 (OS8) dilated."""
    tv = import_torchvision()
    dilate = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}
    if output_stride not in dilate:
        raise ValueError(f"output_stride={output_stride!r}; valid: 8, 16, 32")
    if name not in ("resnet50", "resnet101"):
        raise ValueError(f"backbone={name!r}; valid: resnet50, resnet101")
    return getattr(tv.models, name)(
        weights=None, replace_stride_with_dilation=dilate[output_stride]
    )


def resnet_features(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    out = {}
    for name in ("layer1", "layer2", "layer3", "layer4"):
        x = out[name] = getattr(net, name)(x)
    return out


def _fcn_head(cin: int, num_classes: int) -> nn.Module:
    """torchvision's FCNHead: 3x3 conv to cin/4 + BN + ReLU + dropout 0.1 + 1x1 conv."""
    return import_torchvision().models.segmentation.fcn.FCNHead(cin, num_classes)


class DeepLabV3Plus(nn.Module):
    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        output_stride: int = 16,
        aux_head: bool = False,
    ):
        super().__init__()
        import_torchvision()
        from torchvision.models.segmentation.deeplabv3 import ASPP

        self.backbone = dilated_resnet(backbone, output_stride)
        del self.backbone.fc
        self.aspp = ASPP(2048, [r * 16 // output_stride for r in (6, 12, 18)], 256)
        self.low_level = nn.Sequential(
            nn.Conv2d(256, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True)
        )
        self.decoder = nn.Sequential(*_conv_bn_relu(304, 256, 3), *_conv_bn_relu(256, 256, 3))
        self.classifier = nn.Conv2d(256, num_classes, 1)
        self.aux_classifier = _fcn_head(1024, num_classes) if aux_head else None

    def forward(self, x: torch.Tensor) -> dict:
        size = x.shape[-2:]
        f = resnet_features(self.backbone, x)
        low = self.low_level(f["layer1"])
        y = _upsample(self.aspp(f["layer4"]), low.shape[-2:])
        out = {"out": _upsample(self.classifier(self.decoder(torch.cat([y, low], 1))), size)}
        if self.aux_classifier is not None:
            out["aux"] = _upsample(self.aux_classifier(f["layer3"]), size)
        return out


class PyramidPooling(nn.Module):
    def __init__(self, cin: int, features: int = 512, bins=(1, 2, 3, 6)):
        super().__init__()
        self.features = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(cin, features, 1, bias=False),
                nn.BatchNorm2d(features),
                nn.ReLU(inplace=True),
            )
            for b in bins
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x] + [_upsample(f(x), x.shape[-2:]) for f in self.features], 1)


class PSPNet(nn.Module):
    def __init__(self, num_classes: int, backbone: str = "resnet50", aux_head: bool = True):
        super().__init__()
        self.backbone = dilated_resnet(backbone, 8)
        del self.backbone.fc
        self.ppm = PyramidPooling(2048)
        self.cls = nn.Sequential(
            *_conv_bn_relu(4096, 512, 3), nn.Dropout(0.1), nn.Conv2d(512, num_classes, 1)
        )
        self.aux = _fcn_head(1024, num_classes) if aux_head else None

    def forward(self, x: torch.Tensor) -> dict:
        size = x.shape[-2:]
        f = resnet_features(self.backbone, x)
        out = {"out": _upsample(self.cls(self.ppm(f["layer4"])), size)}
        if self.aux is not None:
            out["aux"] = _upsample(self.aux(f["layer3"]), size)
        return out


# ---- SegFormer ------------------------------------------------------------------------------

# name: (embed dims, depths, decoder width); heads (1, 2, 5, 8), sr (8, 4, 2, 1), mlp ratio 4.
MIT_VARIANTS = {
    "mit_b0": ((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "mit_b1": ((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "mit_b2": ((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "mit_b3": ((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "mit_b4": ((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "mit_b5": ((64, 128, 320, 512), (3, 6, 40, 3), 768),
}


class OverlapPatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int, kernel: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, kernel, stride, kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientAttention(nn.Module):
    def __init__(self, dim: int, heads: int, sr_ratio: int):
        super().__init__()
        self.heads, self.sr_ratio = heads, sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.sr(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
            x = self.norm(x)
        kv = self.kv(x).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class MixFFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.fc1(x)
        b, n, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(x))


class MiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, sr_ratio: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientAttention(dim, heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, 4 * dim)
        self.drop_path = drop_path

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        """Stochastic depth: a whole residual branch per sample, survivors rescaled."""
        if not self.training or self.drop_path == 0.0:
            return x
        keep = 1.0 - self.drop_path
        mask = x.new_empty((x.shape[0], 1, 1)).bernoulli_(keep)
        return x * mask / keep

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self._drop(self.attn(self.norm1(x), h, w))
        return x + self._drop(self.mlp(self.norm2(x), h, w))


class MixVisionTransformer(nn.Module):
    def __init__(self, variant: str = "mit_b0", drop_path_rate: float = 0.1):
        super().__init__()
        if variant not in MIT_VARIANTS:
            raise ValueError(f"backbone={variant!r}; valid: {', '.join(MIT_VARIANTS)}")
        dims, depths, _ = MIT_VARIANTS[variant]
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.embeds, self.blocks, self.norms = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        cin, n = 3, 0
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            kernel, stride = (7, 4) if i == 0 else (3, 2)
            self.embeds.append(OverlapPatchEmbed(cin, dim, kernel, stride))
            self.blocks.append(
                nn.ModuleList(
                    MiTBlock(dim, (1, 2, 5, 8)[i], (8, 4, 2, 1)[i], rates[n + j])
                    for j in range(depth)
                )
            )
            self.norms.append(nn.LayerNorm(dim, eps=1e-6))
            cin, n = dim, n + depth

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for embed, blocks, norm in zip(self.embeds, self.blocks, self.norms, strict=True):
            x, h, w = embed(x)
            for block in blocks:
                x = block(x, h, w)
            x = norm(x).transpose(1, 2).reshape(x.shape[0], -1, h, w)
            features.append(x)
        return features


class SegFormer(nn.Module):
    def __init__(self, num_classes: int, backbone: str = "mit_b0"):
        super().__init__()
        self.backbone = MixVisionTransformer(backbone)
        dims, _, dim = MIT_VARIANTS[backbone]
        self.linear_c = nn.ModuleList(nn.Linear(d, dim) for d in dims)
        self.linear_fuse = nn.Sequential(
            nn.Conv2d(4 * dim, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout2d(0.1)
        self.linear_pred = nn.Conv2d(dim, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict:
        size = x.shape[-2:]
        features = self.backbone(x)
        stride4 = features[0].shape[-2:]
        projected = []
        for proj, f in zip(self.linear_c, features, strict=True):
            y = proj(f.flatten(2).transpose(1, 2)).transpose(1, 2).unflatten(2, f.shape[-2:])
            projected.append(_upsample(y, stride4))
        y = self.linear_fuse(torch.cat(projected[::-1], 1))
        return {"out": _upsample(self.linear_pred(self.dropout(y)), size)}


# ---- Registry -------------------------------------------------------------------------------


def build(
    name: str,
    num_classes: int,
    *,
    base_width: int = 64,
    depth: int = 4,
    up_mode: str = "transpose",
    backbone: str | None = None,
    output_stride: int | None = None,
    aux_head: bool = False,
) -> nn.Module:
    """The PyTorch model for a jaxseg model name, with jaxseg's config options."""
    if name == "unet":
        return UNet(num_classes, base_width, depth, up_mode)
    if name == "deeplabv3plus":
        return DeepLabV3Plus(num_classes, backbone or "resnet50", output_stride or 16, aux_head)
    if name == "pspnet":
        return PSPNet(num_classes, backbone or "resnet50", aux_head)
    if name == "segformer":
        return SegFormer(num_classes, backbone or "mit_b2")
    if name in ("fcn", "deeplabv3", "lraspp"):
        seg = import_torchvision().models.segmentation
        if name == "lraspp":
            return seg.lraspp_mobilenet_v3_large(
                weights=None, weights_backbone=None, num_classes=num_classes
            )
        if output_stride not in (None, 8):
            raise ValueError(f"torchvision's {name} runs at output stride 8, not {output_stride}")
        return getattr(seg, f"{name}_{backbone or 'resnet50'}")(
            weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux_head
        )
    valid = "deeplabv3, deeplabv3plus, fcn, lraspp, pspnet, segformer, unet"
    raise KeyError(f"unknown model {name!r}; valid: {valid}")


def count_params(model: nn.Module) -> int:
    """Parameters only (BatchNorm running statistics are buffers), as jaxseg counts."""
    return sum(p.numel() for p in model.parameters())
