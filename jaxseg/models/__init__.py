"""Model registry: MODELS maps a config name to a Flax module class. Each built-in model
registers itself where it is defined (jaxseg.models.table.register), as a plug-in does;
importing this package imports them all."""

from __future__ import annotations

from jaxseg.models import (  # noqa: F401 (imported to register the built-in models)
    bisenet,
    bisenetv2,
    deeplab,
    deeplab_v2,
    dfanet,
    encoder_decoder,
    espnet,
    fast_scnn,
    fc_densenet,
    fcn,
    fcn_vgg,
    linear,
    liteseg,
    lraspp,
    pspnet,
    segformer,
    segnet,
    semantic_fpn,
    setr,
    swin_unet,
    transunet,
    unet,
)
from jaxseg.models.table import MODELS, build_model, options, register

__all__ = ["MODELS", "build_model", "options", "register"]
