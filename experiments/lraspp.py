"""LR-ASPP on a dilated MobileNetV3-Large (Howard et al., 2019), as torchvision's
lraspp_mobilenet_v3_large.

    python -m jaxseg.train --config experiments/lraspp.py --workdir runs/lraspp
    python -m jaxseg.train --config experiments/lraspp.py:quick --workdir runs/lraspp_quick

torchvision checkpoints load with --config.model.pretrained=FILE.pth.
"""

from jaxseg.configs import base_config, cpu_quick


def get_config(arg=None):
    c = base_config()
    c.model.name = "lraspp"
    c.data.image_size = (512, 512)
    c.data.eval_size = (512, 512)
    c.data.scale_range = (0.5, 2.0)
    c.total_steps = 40_000
    c.eval_every = 4000
    c.checkpoint_every = 2000
    c.optim.name = "sgd"
    c.optim.lr = 0.01
    c.optim.schedule = "poly"
    c.dtype = "auto"
    if arg == "quick":
        cpu_quick(c, steps=300)
    elif arg:
        raise ValueError(f"experiments/lraspp.py: unknown arg {arg!r}; valid: quick")
    return c
