"""DeepLabV3 on ResNet-50 (Chen et al., 2017) as torchvision's deeplabv3_resnet50:
output stride 8, ASPP rates (12, 24, 36) with image pooling, auxiliary FCN head on stage 3.

    python -m jaxseg.train --config experiments/deeplabv3.py --workdir runs/deeplabv3
    python -m jaxseg.train --config experiments/deeplabv3.py:quick --workdir runs/deeplabv3_quick

The recipe: 512x512 crops, scale 0.5-2.0, SGD 0.01 poly, aux loss weight 0.4,
bfloat16 on accelerators. --config.model.multi_grid="(1, 2, 4)" gives the paper's
multi-grid; torchvision checkpoints load with --config.model.pretrained=FILE.pth.
"""

from jaxseg.configs import base_config, cpu_quick, sgd_512


def get_config(arg=None):
    c = base_config(model="deeplabv3")
    c.model.backbone = "resnet50"
    c.model.output_stride = 8
    c.model.aux_head = True
    c.loss.aux_weights = (("aux", 0.4),)
    sgd_512(c)
    if arg == "quick":
        # ResNet-18: from scratch, ResNet-50 stays on the all-background plateau for the
        # length of a CPU smoke run. 800 steps: 400 ended short of val mIoU 0.5. What was
        # tried and measured: docs/tuning.md.
        cpu_quick(c, steps=800, batch=16)
        c.model.backbone = "resnet18"
    elif arg:
        raise ValueError(f"experiments/deeplabv3.py: unknown arg {arg!r}; valid: quick")
    return c
