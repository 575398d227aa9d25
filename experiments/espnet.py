"""ESPNet (Mehta et al., 2018): efficient spatial pyramid modules with hierarchical feature
fusion, input reinforcement and a light decoder; 0.36 M parameters. `:c` is ESPNet-C.

    python -m jaxseg.train --config experiments/espnet.py --workdir runs/espnet
    python -m jaxseg.train --config experiments/espnet.py:c --workdir runs/espnet_c
    python -m jaxseg.train --config experiments/espnet.py:quick --workdir runs/espnet_q

The paper's recipe (Cityscapes, from scratch): Adam lr 5e-4, weight decay 5e-4, batch 12,
1024x512 images with random scaling, flips and crops, ENet class weights, 300 epochs. It
differs in: AdamW (decoupled decay) with a cosine decay instead of Adam with a step
decay, 512x512 crops on `shapes`, and the authors' two stages (ESPNet-C first, then the
decoder with the encoder loaded) are one stage here. `quick` is a CPU smoke run: 64x64
`shapes`, 600 AdamW steps at lr 3e-3.
"""

from jaxseg.configs import base_config


def get_config(arg=None):
    c = base_config(model="espnet")
    c.model.variant = "espnet"
    c.data.image_size = (512, 512)
    c.eval.size = (512, 512)
    c.augment.scale_range = (0.5, 2.0)
    c.batch_size = 12
    c.total_steps = 40_000
    c.eval_every = 4000
    c.checkpoint_every = 2000
    c.optim.name = "adamw"
    c.optim.lr = 5e-4
    c.optim.weight_decay = 5e-4
    c.optim.schedule = "cosine"
    c.loss.class_weight_method = "enet"
    c.dtype = "auto"
    if arg == "c":
        c.model.variant = "espnet_c"
    elif arg == "quick":
        c.total_steps = 600
        c.batch_size = 16
        c.eval.batch_size = 20
        c.data.image_size = (64, 64)
        c.eval.size = (64, 64)
        c.augment.scale_range = (1.0, 1.0)
        c.data.num_val = 100
        c.optim.lr = 3e-3
        c.optim.warmup_steps = 30
        c.loss.class_weight_method = ""
        c.log_every = 25
        c.eval_every = 300
        c.checkpoint_every = 300
        c.dtype = "float32"
    elif arg:
        raise ValueError(f"experiments/espnet.py: unknown arg {arg!r}; valid: c, quick")
    return c
