"""DeepLabV3+ R50 on Cityscapes, MMSegmentation's deeplabv3plus_r50-d8_512x1024_80k_cityscapes:
output stride 8, depthwise-separable ASPP and decoder, auxiliary FCN head on stage 3 (loss
weight 0.4), 512x1024 crops of images rescaled by 0.5-2.0 (at most 75 % one class) and
flipped, photometric distortion, batch 8, SGD lr 0.01 (momentum 0.9, weight decay 5e-4)
with poly(0.9) decay to 1e-4 over 80k steps; evaluated on val at the full 1024x2048.

    python -m jaxseg.train --config experiments/deeplabv3plus_cityscapes.py \
        --config.data.root=/data/cityscapes --config.model.pretrained=resnet50.pth
    python -m jaxseg.train --config experiments/deeplabv3plus_cityscapes.py:quick \
        --config.data.root=/tmp/trees/cityscapes      # tests/dataset_trees.py builds one

Reference: MMSegmentation's model zoo (configs/deeplabv3plus/README.md) gives val mIoU
80.09 (81.13 multi-scale + flip) for this recipe, 79.61 at 40k steps, with ImageNet
weights on ResNetV1c (a deep 3-conv stem); torchvision's ResNet-50 here has the 7x7 stem.
`quick` is a CPU smoke run on ResNet-18 at 64x64 crops (see get_config).
"""

from jaxseg.configs import base_config
from jaxseg.data import cityscapes


def get_config(arg=None):
    c = base_config(model="deeplabv3plus", data="cityscapes")
    c.model.backbone = "resnet50"
    c.model.output_stride = 8
    c.model.separable = True
    c.model.aux_head = True
    c.loss.aux_weights = (("aux", 0.4),)
    c.data.image_size = (512, 1024)
    c.augment.scale_range = (0.5, 2.0)
    c.augment.cat_max_ratio = 0.75
    c.augment.photometric = True
    c.batch_size = 8
    c.total_steps = 80_000
    c.eval_every = 8000
    c.checkpoint_every = 4000
    c.optim.name = "sgd"
    c.optim.lr = 0.01
    c.optim.weight_decay = 5e-4
    c.optim.schedule = "poly"
    c.optim.end_lr = 1e-4
    c.eval.update(cityscapes.EVAL)
    # This model's MMSegmentation config evaluates whole images (test_cfg mode='whole'),
    # as its reference mIoU was measured, rather than Cityscapes' usual slide windows.
    c.eval.mode = "whole"
    c.eval.batch_size = 8
    c.dtype = "auto"
    if arg == "quick":
        quick(c)
        c.model.backbone = "resnet18"
        c.model.output_stride = 16
    elif arg:
        raise ValueError(
            f"experiments/deeplabv3plus_cityscapes.py: unknown arg {arg!r}; valid: quick"
        )
    return c


def quick(c):
    """A few CPU steps at 64x64 crops; evaluation of images resized to a 32-pixel shorter
    side (a tiny tree's are already), whatever the data."""
    c.data.image_size = (64, 64)
    c.augment.scale_range = (1.0, 1.0)
    c.augment.cat_max_ratio = 1.0
    c.batch_size = 8
    c.total_steps = 20
    c.log_every = 5
    c.eval_every = 10
    c.checkpoint_every = 10
    c.optim.name = "adamw"
    c.optim.lr = 1e-3
    c.optim.weight_decay = 1e-4
    c.optim.end_lr = 0.0
    c.eval.shorter_side = 32
    c.eval.size = (64, 128)
    c.eval.batch_size = 8
    c.dtype = "float32"
