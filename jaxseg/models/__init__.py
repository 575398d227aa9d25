"""Model registry: MODELS maps a config name to a Flax module class."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.bisenet import BiSeNetV1
from jaxseg.models.bisenetv2 import BiSeNetV2
from jaxseg.models.deeplab import DeepLabV3, DeepLabV3Plus
from jaxseg.models.deeplab_v2 import DeepLabLargeFOV, DeepLabV2
from jaxseg.models.dfanet import DFANet
from jaxseg.models.encoder_decoder import EncoderDecoder
from jaxseg.models.espnet import ESPNet
from jaxseg.models.fast_scnn import FastSCNN
from jaxseg.models.fc_densenet import FCDenseNet
from jaxseg.models.fcn import FCN
from jaxseg.models.fcn_vgg import FCNVGG16
from jaxseg.models.linear import PixelLinear
from jaxseg.models.liteseg import LiteSeg
from jaxseg.models.lraspp import LRASPP
from jaxseg.models.pspnet import PSPNet
from jaxseg.models.segformer import SegFormer
from jaxseg.models.segnet import SegNet
from jaxseg.models.semantic_fpn import SemanticFPN
from jaxseg.models.setr import SETR
from jaxseg.models.swin_unet import SwinUNet
from jaxseg.models.transunet import TransUNet
from jaxseg.models.unet import UNet

MODELS = {
    "linear": PixelLinear,
    "unet": UNet,
    "encoder_decoder": EncoderDecoder,
    "fcn_vgg16": FCNVGG16,
    "segnet": SegNet,
    "fcn": FCN,
    "deeplabv3": DeepLabV3,
    "deeplabv3plus": DeepLabV3Plus,
    "pspnet": PSPNet,
    "segformer": SegFormer,
    "lraspp": LRASPP,
    "fast_scnn": FastSCNN,
    "deeplab_largefov": DeepLabLargeFOV,
    "deeplabv2": DeepLabV2,
    "fc_densenet": FCDenseNet,
    "bisenetv1": BiSeNetV1,
    "bisenetv2": BiSeNetV2,
    "espnet": ESPNet,
    "liteseg": LiteSeg,
    "dfanet": DFANet,
    "setr": SETR,
    "transunet": TransUNet,
    "swin_unet": SwinUNet,
    "semantic_fpn": SemanticFPN,
}


def build_model(name: str, num_classes: int, *, dtype: str = "float32", **options) -> nn.Module:
    """MODELS[name](num_classes, dtype, **options); an unknown name lists the valid ones."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    module = MODELS[name]
    # Pass only the options this module declares: config.model holds every model's fields.
    fields = {f for f in module.__dataclass_fields__ if f not in ("parent", "name")}
    options = {k: v for k, v in options.items() if k in fields}
    return module(num_classes=num_classes, dtype=jnp.dtype(dtype), **options)
