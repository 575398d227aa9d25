"""U-Net on the embedded `shapes` dataset.

    python -m jaxseg.train --config experiments/unet.py --workdir runs/unet
    python -m jaxseg.train --config experiments/unet.py:quick --workdir runs/unet_quick

`quick` is the CPU smoke run of the README: a narrow U-Net at 64x64 that reaches
val mIoU >= 0.8 in a few minutes on two cores.
"""

from jaxseg.configs import base_config


def get_config(arg=None):
    c = base_config(model="unet")
    c.model.base_width = 64
    c.optim.name = "adamw"
    c.optim.lr = 1e-3
    c.optim.weight_decay = 1e-4
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100
    if arg == "quick":
        c.total_steps = 900
        c.batch_size = 16
        c.eval.batch_size = 40
        c.data.image_size = (64, 64)
        c.eval.size = (64, 64)
        c.data.num_val = 200
        c.model.base_width = 16
        c.optim.lr = 6e-3
        c.optim.warmup_steps = 30
        c.log_every = 25
        c.eval_every = 450
        c.checkpoint_every = 450
    elif arg:
        raise ValueError(f"experiments/unet.py: unknown arg {arg!r}; valid: quick")
    return c
