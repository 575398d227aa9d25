"""DFANet (Li et al., 2019): three chained light Xception backbones with sub-network and
sub-stage aggregation and fc attention. `:b` is DFANet B (narrower backbone).

    python -m jaxseg.train --config experiments/dfanet.py --workdir runs/dfanet
    python -m jaxseg.train --config experiments/dfanet.py:b --workdir runs/dfanet_b
    python -m jaxseg.train --config experiments/dfanet.py:quick --workdir runs/dfanet_q

The authors train on Cityscapes with SGD (momentum 0.9) and poly decay from an ImageNet-
pretrained backbone A, at 1024x1024. Here: configs.sgd_512's shared recipe (512x512 crops
on `shapes`, lr 0.01, 40k steps), from scratch (no ImageNet backbone A file exists in a
format the converter reads). `quick` is a CPU smoke run: 64x64 `shapes`, 300 AdamW steps.
"""

from jaxseg.configs import base_config, cpu_quick, sgd_512


def get_config(arg=None):
    c = base_config(model="dfanet")
    c.model.variant = "A"
    sgd_512(c)
    if arg == "b":
        c.model.variant = "B"
    elif arg == "quick":
        cpu_quick(c, steps=300)
    elif arg:
        raise ValueError(f"experiments/dfanet.py: unknown arg {arg!r}; valid: b, quick")
    return c
