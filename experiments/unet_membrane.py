"""U-Net on the ISBI 2012 EM membrane images (../shared/data/membrane): 25 train, 5 val.

    python -m jaxseg.train --config experiments/unet_membrane.py --workdir runs/membrane
    python -m jaxseg.train --config experiments/unet_membrane.py:quick --workdir runs/membrane_q

Training uses random 128x128 crops (flipped), evaluation the whole 512x512 images.
"""

from jaxseg.configs import base_config


def get_config(arg=None):
    c = base_config(model="unet", data="membrane")
    c.data.image_size = (128, 128)
    c.eval.size = (512, 512)
    c.batch_size = 8
    c.eval.batch_size = 8
    c.model.base_width = 32
    c.optim.name = "adamw"
    c.optim.lr = 2e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 50
    c.total_steps = 3000
    c.eval_every = 500
    c.checkpoint_every = 500
    if arg == "quick":
        c.model.base_width = 16
        c.total_steps = 500
        c.log_every = 25
        c.eval_every = 250
        c.checkpoint_every = 250
    elif arg:
        raise ValueError(f"experiments/unet_membrane.py: unknown arg {arg!r}; valid: quick")
    return c
