"""LiteSeg-MobileNet (Emara et al., 2019): MobileNetV2, a deeper ASPP of separable convs at
dilations 3, 6, 9, a long residual (backbone output into the fusion) and a short one
(stride-4 features into the decoder).

    python -m jaxseg.train --config experiments/liteseg.py --workdir runs/liteseg
    python -m jaxseg.train --config experiments/liteseg.py:quick --workdir runs/liteseg_q

The authors' release trains with SGD momentum 0.9, weight decay 5e-4 and poly(0.9) decay
from ImageNet MobileNetV2 (`--config.model.pretrained=mobilenet_v2.pth`, torchvision's
file), at several crop sizes of Cityscapes rescaled by 0.2-0.8, after a stage on the
coarse labels. Here: configs.sgd_512's 512x512 crops on `shapes`, lr 0.01, 40k steps, one
stage. `quick` is a CPU smoke run from scratch: 64x64 `shapes`, 300 AdamW steps.
"""

from jaxseg.configs import base_config, cpu_quick, sgd_512


def get_config(arg=None):
    c = base_config(model="liteseg")
    sgd_512(c)
    c.optim.weight_decay = 5e-4
    if arg == "quick":
        cpu_quick(c, steps=300)
    elif arg:
        raise ValueError(f"experiments/liteseg.py: unknown arg {arg!r}; valid: quick")
    return c
