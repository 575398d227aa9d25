"""The plain encoder-decoder baseline: two conv + max-pool stages, two transposed-conv
stages back to full resolution, a 1x1 classifier.

    python -m jaxseg.train --config experiments/encoder_decoder.py --workdir runs/encdec
    python -m jaxseg.train --config experiments/encoder_decoder.py:quick --workdir runs/encdec_quick

A floor for the real architectures, between the per-pixel linear model and U-Net.
"""

from jaxseg.configs import base_config, cpu_quick


def get_config(arg=None):
    c = base_config(model="encoder_decoder")
    c.model.base_width = 64
    c.optim.name = "adamw"
    c.optim.lr = 1e-3
    c.optim.schedule = "cosine"
    if arg == "quick":
        cpu_quick(c, steps=300)
        c.model.base_width = 16
    elif arg:
        raise ValueError(f"experiments/encoder_decoder.py: unknown arg {arg!r}; valid: quick")
    return c
