"""LR-ASPP on a dilated MobileNetV3-Large (Howard et al., 2019), as torchvision's
lraspp_mobilenet_v3_large.

    python -m jaxseg.train --config experiments/lraspp.py --workdir runs/lraspp
    python -m jaxseg.train --config experiments/lraspp.py:quick --workdir runs/lraspp_quick

torchvision checkpoints load with --config.model.pretrained=FILE.pth.
"""

from jaxseg.configs import base_config, cpu_quick, sgd_512


def get_config(arg=None):
    c = base_config(model="lraspp")
    sgd_512(c)
    if arg == "quick":
        cpu_quick(c, steps=300)
    elif arg:
        raise ValueError(f"experiments/lraspp.py: unknown arg {arg!r}; valid: quick")
    return c
