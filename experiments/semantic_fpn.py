"""Semantic FPN (Kirillov et al., 2019) on ResNet-50: FPN neck (256 channels) and the
semantic branch (128 channels), as mmsegmentation's fpn_r50 configs.

    python -m jaxseg.train --config experiments/semantic_fpn.py --workdir runs/semantic_fpn
    python -m jaxseg.train --config experiments/semantic_fpn.py:quick --workdir runs/fpn_quick

The recipe is mmseg's (ADE20K 512x512): scale 0.5-2.0, SGD lr 0.01, momentum 0.9, weight
decay 1e-4, poly decay (power 0.9) over 80k iterations of batch 16, bfloat16 on
accelerators. torchvision ImageNet ResNet files load with --config.model.pretrained=FILE.
"""

from jaxseg.configs import base_config, cpu_quick, sgd_512


def get_config(arg=None):
    c = base_config(model="semantic_fpn")
    c.model.backbone = "resnet50"
    sgd_512(c)
    c.total_steps = 80_000
    c.eval_every = 8000
    c.checkpoint_every = 4000
    if arg == "quick":
        # ResNet-18 instead of ResNet-50 (from scratch, see experiments/pspnet.py), 64x64
        # crops, batch 16, 400 AdamW steps.
        cpu_quick(c, steps=400, batch=16)
        c.model.backbone = "resnet18"
    elif arg:
        raise ValueError(f"experiments/semantic_fpn.py: unknown arg {arg!r}; valid: quick")
    return c
