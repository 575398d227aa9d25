"""Swin-Unet (Cao et al., 2021): Swin-T encoder at the official depths (2, 2, 2, 2), patch
expanding decoder with skip connections, final 4x patch expanding.

    python -m jaxseg.train --config experiments/swin_unet.py --workdir runs/swin_unet
    python -m jaxseg.train --config experiments/swin_unet.py:quick --workdir runs/swin_unet_quick

The recipe is the official code's (Synapse): 224x224 inputs, SGD lr 0.05, momentum 0.9,
weight decay 1e-4, poly decay (power 0.9), batch 24, 150 epochs of 2211 slices (about 14k
iterations), loss 0.4 CE + 0.6 Dice, bfloat16 on accelerators. timm's
swin_tiny_patch4_window7_224 file loads with --config.model.pretrained=FILE.
"""

from jaxseg.configs import base_config, cpu_quick


def get_config(arg=None):
    c = base_config(model="swin_unet", loss=(("ce", 0.4), ("dice", 0.6)))
    c.model.backbone = "swin_t"
    c.data.image_size = (224, 224)
    c.eval.size = (224, 224)
    c.augment.rot90 = True
    c.batch_size = 24
    c.total_steps = 13_800
    c.eval_every = 2000
    c.checkpoint_every = 2000
    c.optim.name = "sgd"
    c.optim.lr = 0.05
    c.optim.weight_decay = 1e-4
    c.optim.schedule = "poly"
    c.dtype = "auto"
    if arg == "quick":
        # 64x64 crops, 300 AdamW steps (the full Swin-T widths, from scratch).
        cpu_quick(c, steps=300)
    elif arg:
        raise ValueError(f"experiments/swin_unet.py: unknown arg {arg!r}; valid: quick")
    return c
