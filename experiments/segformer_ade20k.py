"""SegFormer on ADE20K, MMSegmentation's segformer_mit-b0_512x512_160k_ade20k (the arg picks
the encoder, b0 by default, to b5): 512x512 crops of images rescaled by 0.5-2.0 (at most
75 % one class) and flipped, photometric distortion, batch 16, AdamW lr 6e-5 (weight decay
0.01, the head at 10x the learning rate) after 1500 linear warmup steps, poly(1.0) decay
over 160k steps; evaluated on validation, whole images with the shorter side at 512.

    python -m jaxseg.train --config experiments/segformer_ade20k.py \
        --config.data.root=/data/ADEChallengeData2016 --config.model.pretrained=mit_b0.pth
    python -m jaxseg.train --config experiments/segformer_ade20k.py:quick \
        --config.data.root=/tmp/trees/ade20k/ADEChallengeData2016   # tests/dataset_trees.py

MMSegmentation rescales to a 512-pixel shorter side times 0.5-2.0; ADE20K's images are
mostly about 512 pixels on the shorter side, so their own size is used here.

Reference: MMSegmentation's model zoo (configs/segformer/README.md) gives val mIoU 37.85
(38.97 multi-scale + flip) for MiT-B0, 42.13 B1, 46.80 B2, 48.25 B3, 49.09 B4, 49.13 B5
(512x512, 160k steps, ImageNet MiT weights). `quick` (or e.g. `b1,quick`) is a CPU smoke
run at 64x64 crops.
"""

from jaxseg.configs import base_config
from jaxseg.data import ade20k

VARIANTS = ("b0", "b1", "b2", "b3", "b4", "b5")


def get_config(arg=None):
    parts = [p for p in (arg or "").split(",") if p]
    unknown = [p for p in parts if p not in VARIANTS + ("quick",)]
    if unknown:
        raise ValueError(
            f"experiments/segformer_ade20k.py: unknown arg {unknown[0]!r}; "
            f"valid: {', '.join(VARIANTS)}, quick"
        )
    variant = next((p for p in parts if p in VARIANTS), "b0")
    c = base_config(model="segformer", data="ade20k")
    c.model.backbone = f"mit_{variant}"
    c.data.image_size = (512, 512)
    c.augment.scale_range = (0.5, 2.0)
    c.augment.cat_max_ratio = 0.75
    c.augment.photometric = True
    c.batch_size = 16
    c.total_steps = 160_000
    c.eval_every = 16_000
    c.checkpoint_every = 4000
    c.optim.name = "adamw"
    c.optim.lr = 6e-5
    c.optim.weight_decay = 0.01
    c.optim.head_lr_mult = 10.0
    c.optim.schedule = "poly"
    c.optim.poly_power = 1.0
    c.optim.warmup_steps = 1500
    c.eval.update(ade20k.EVAL)
    c.dtype = "auto"
    if "quick" in parts:
        c.data.image_size = (64, 64)
        c.augment.scale_range = (1.0, 1.0)
        c.augment.cat_max_ratio = 1.0
        c.batch_size = 8
        c.total_steps = 20
        c.log_every = 5
        c.eval_every = 10
        c.checkpoint_every = 10
        c.optim.lr = 1e-3
        c.optim.head_lr_mult = 1.0
        c.optim.warmup_steps = 2
        c.eval.shorter_side = 64
        c.eval.size = (128, 128)
        c.eval.batch_size = 8
        c.dtype = "float32"
    return c
