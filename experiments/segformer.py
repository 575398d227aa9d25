"""SegFormer (Xie et al., 2021): Mix-Transformer encoder and all-MLP decoder.

    python -m jaxseg.train --config experiments/segformer.py --workdir runs/segformer_b0
    python -m jaxseg.train --config experiments/segformer.py:b2 --workdir runs/segformer_b2
    python -m jaxseg.train --config experiments/segformer.py:quick --workdir runs/segformer_quick

The arg picks the encoder, b0 (default) to b5; `quick` (or e.g. `b1,quick`) is the CPU
smoke run. The recipe follows the paper: AdamW lr 6e-5, weight decay 0.01, poly decay
after 1500 warmup steps, 512x512 crops, scale 0.5-2.0, bfloat16 on accelerators.
ImageNet MiT weights (original or HuggingFace format) load with
--config.model.pretrained=FILE.
"""

from jaxseg.configs import base_config, cpu_quick

VARIANTS = ("b0", "b1", "b2", "b3", "b4", "b5")


def get_config(arg=None):
    parts = [p for p in (arg or "").split(",") if p]
    unknown = [p for p in parts if p not in VARIANTS + ("quick",)]
    if unknown:
        raise ValueError(
            f"experiments/segformer.py: unknown arg {unknown[0]!r}; "
            f"valid: {', '.join(VARIANTS)}, quick"
        )
    variant = next((p for p in parts if p in VARIANTS), "b0")
    c = base_config(model="segformer")
    c.model.backbone = f"mit_{variant}"
    c.data.image_size = (512, 512)
    c.eval.size = (512, 512)
    c.augment.scale_range = (0.5, 2.0)
    c.total_steps = 40_000
    c.eval_every = 4000
    c.checkpoint_every = 2000
    c.optim.name = "adamw"
    c.optim.lr = 6e-5
    c.optim.weight_decay = 0.01
    c.optim.schedule = "poly"
    c.optim.poly_power = 1.0
    c.optim.warmup_steps = 1500
    c.dtype = "auto"
    if "quick" in parts:
        cpu_quick(c, steps=300)
    return c
