"""TransUNet (Chen et al., 2021): R50+ViT-B/16 hybrid encoder, cascaded upsampler with
three skip connections.

    python -m jaxseg.train --config experiments/transunet.py --workdir runs/transunet
    python -m jaxseg.train --config experiments/transunet.py:quick --workdir runs/transunet_quick

The recipe is the paper's (Synapse): 224x224 inputs, SGD lr 0.01, momentum 0.9, weight
decay 1e-4, poly decay (power 0.9) over 14k iterations of batch 24, loss 0.5 CE + 0.5
Dice, bfloat16 on accelerators. The R50+ViT-B/16 ImageNet-21k weights (timm's
vit_base_r50_s16_384 file) load with --config.model.pretrained=FILE
--config.model.pretrain_size=384.
"""

from jaxseg.configs import base_config, cpu_quick


def get_config(arg=None):
    c = base_config(model="transunet", loss=(("ce", 0.5), ("dice", 0.5)))
    c.model.backbone = "vit_b16"
    c.data.image_size = (224, 224)
    c.eval.size = (224, 224)
    c.augment.rot90 = True  # the paper's random rotation and flip
    c.batch_size = 24
    c.total_steps = 14_000
    c.eval_every = 2000
    c.checkpoint_every = 2000
    c.optim.name = "sgd"
    c.optim.lr = 0.01
    c.optim.weight_decay = 1e-4
    c.optim.schedule = "poly"
    c.dtype = "auto"
    if arg == "quick":
        # ViT-Ti/16 blocks on the same R50 stages, 64x64 crops, 300 AdamW steps.
        cpu_quick(c, steps=300)
        c.model.backbone = "vit_ti16"
    elif arg:
        raise ValueError(f"experiments/transunet.py: unknown arg {arg!r}; valid: quick")
    return c
