"""The per-pixel linear model (one 1x1 convolution): the floor any real model must beat.

    python -m jaxseg.train --config experiments/linear.py --workdir runs/linear
    python -m jaxseg.train --config experiments/linear.py:quick --workdir runs/linear_quick

On `shapes` it reaches val mIoU ~0.15 (tests/test_shapes_learnable.py).
"""

from jaxseg.configs import base_config, cpu_quick


def get_config(arg=None):
    c = base_config(model="linear")
    c.optim.name = "adamw"
    c.optim.lr = 1e-2
    c.optim.schedule = "cosine"
    if arg == "quick":
        cpu_quick(c, steps=300)
    elif arg:
        raise ValueError(f"experiments/linear.py: unknown arg {arg!r}; valid: quick")
    return c
