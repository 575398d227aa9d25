"""FC-DenseNet, "The One Hundred Layers Tiramisu" (Jegou et al., 2017): `:56`, `:67`, `:103`.

    python -m jaxseg.train --config experiments/fc_densenet.py --workdir runs/tiramisu103
    python -m jaxseg.train --config experiments/fc_densenet.py:56 --workdir runs/tiramisu56
    python -m jaxseg.train --config experiments/fc_densenet.py:quick --workdir runs/tiramisu_q

The paper's recipe (from scratch, no pretraining): random 224x224 crops and horizontal
flips, batch 3, dropout 0.2, weight decay 1e-4, HeUniform init, then fine-tuning on whole
images. It differs in: the paper's RMSprop at lr 1e-3 with an exponential decay of 0.995
per epoch is AdamW 1e-3 with a cosine decay here (the optimizers jaxseg has), and there is
no separate fine-tuning stage. `quick` is FC-DenseNet56 (dropout and all) on 48x48
`shapes`, smaller than the other quick runs because its full-resolution dense blocks make
a step several times dearer than the quick U-Net's on a CPU; how it was tuned and what it
measured: docs/tuning.md.
"""

from jaxseg.configs import base_config

VARIANTS = ("56", "67", "103")


def get_config(arg=None):
    c = base_config(model="fc_densenet")
    c.model.variant = "103"
    c.data.image_size = (224, 224)
    c.eval.size = (224, 224)
    c.batch_size = 3
    c.eval.batch_size = 8
    c.total_steps = 30_000
    c.eval_every = 3000
    c.checkpoint_every = 3000
    c.optim.name = "adamw"
    c.optim.lr = 1e-3
    c.optim.weight_decay = 1e-4
    c.optim.schedule = "cosine"
    c.dtype = "auto"
    if arg in VARIANTS:
        c.model.variant = arg
    elif arg == "quick":
        c.model.variant = "56"
        c.total_steps = 1500
        c.batch_size = 16
        c.eval.batch_size = 20
        c.data.image_size = (48, 48)
        c.eval.size = (48, 48)
        c.data.num_val = 100
        c.optim.lr = 3e-3
        c.optim.warmup_steps = 50
        c.log_every = 25
        c.eval_every = 500
        c.checkpoint_every = 500
        c.dtype = "float32"
    elif arg:
        raise ValueError(
            f"experiments/fc_densenet.py: unknown arg {arg!r}; valid: quick, {', '.join(VARIANTS)}"
        )
    return c
