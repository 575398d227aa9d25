"""BiSeNet V2 (Yu et al., 2021): detail branch, semantic branch (stem, gather-and-expand,
context embedding), bilateral guided aggregation, four booster heads each weighted 1.

    python -m jaxseg.train --config experiments/bisenetv2.py --workdir runs/bisenetv2
    python -m jaxseg.train --config experiments/bisenetv2.py:quick --workdir runs/bisenetv2_q

The paper's recipe (Cityscapes, from scratch): SGD momentum 0.9, weight decay 5e-4, lr
5e-2 with poly(0.9) decay, batch 16, 150k iterations, scales 0.75-2.0, 2048x1024 crops.
It differs in: 512x512 crops on `shapes` and 40k steps (configs.sgd_512); the OHEM loss of
the common implementation is `--config.loss.terms="(('ohem', 1.0),)"`. `quick` is a CPU
smoke run: 64x64 `shapes`, 300 AdamW steps.
"""

from jaxseg.configs import base_config, cpu_quick, sgd_512


def get_config(arg=None):
    c = base_config(model="bisenetv2")
    c.model.aux_head = True
    c.loss.aux_weights = (("stem", 1.0), ("s3", 1.0), ("s4", 1.0), ("s5", 1.0))
    sgd_512(c)
    c.optim.lr = 0.05
    c.optim.weight_decay = 5e-4
    c.augment.scale_range = (0.75, 2.0)
    if arg == "quick":
        cpu_quick(c, steps=300)
    elif arg:
        raise ValueError(f"experiments/bisenetv2.py: unknown arg {arg!r}; valid: quick")
    return c
