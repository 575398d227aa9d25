"""DeepLabV3+ R50 on Pascal VOC 2012 + SBD (train_aug, 10,582 images), MMSegmentation's
deeplabv3plus_r50-d8_512x512_40k_voc12aug: output stride 8, depthwise-separable ASPP and
decoder, auxiliary FCN head on stage 3 (loss weight 0.4), 512x512 crops of images rescaled
by 0.5-2.0 (at most 75 % one class) and flipped, photometric distortion, batch 16, SGD lr
0.01 (momentum 0.9, weight decay 5e-4) with poly(0.9) decay to 1e-4 over 40k steps;
evaluated on VOC val, whole images with the shorter side resized to 512.

    python -m jaxseg.train --config experiments/deeplabv3plus_voc.py \
        --config.data.root=/data/VOCdevkit --config.model.pretrained=resnet50.pth
    python -m jaxseg.train --config experiments/deeplabv3plus_voc.py:quick \
        --config.data.root=/tmp/trees/voc/VOCdevkit   # tests/dataset_trees.py builds one

With SBD as released instead of VOC2012/SegmentationClassAug, add
--config.data.sbd_root=/data/benchmark_RELEASE. MMSegmentation rescales to a 512-pixel
shorter side times 0.5-2.0; VOC's images are about 500 pixels, so their own size is used.

Reference: MMSegmentation's model zoo (configs/deeplabv3plus/README.md) gives val mIoU
76.81 (77.57 multi-scale + flip) for this recipe, 75.93 at 20k steps, with ImageNet
weights on ResNetV1c (a deep 3-conv stem); torchvision's ResNet-50 here has the 7x7 stem.
`quick` is a CPU smoke run on ResNet-18 at 64x64 crops.
"""

from jaxseg.configs import base_config
from jaxseg.data import voc


def get_config(arg=None):
    c = base_config(model="deeplabv3plus", data="voc_aug")
    c.model.backbone = "resnet50"
    c.model.output_stride = 8
    c.model.separable = True
    c.model.aux_head = True
    c.loss.aux_weights = (("aux", 0.4),)
    c.data.image_size = (512, 512)
    c.augment.scale_range = (0.5, 2.0)
    c.augment.cat_max_ratio = 0.75
    c.augment.photometric = True
    c.batch_size = 16
    c.total_steps = 40_000
    c.eval_every = 4000
    c.checkpoint_every = 4000
    c.optim.name = "sgd"
    c.optim.lr = 0.01
    c.optim.weight_decay = 5e-4
    c.optim.schedule = "poly"
    c.optim.end_lr = 1e-4
    c.eval.update(voc.EVAL)
    c.dtype = "auto"
    if arg == "quick":
        c.data.image_size = (64, 64)
        c.augment.scale_range = (1.0, 1.0)
        c.augment.cat_max_ratio = 1.0
        c.model.backbone = "resnet18"
        c.model.output_stride = 16
        c.batch_size = 8
        c.total_steps = 20
        c.log_every = 5
        c.eval_every = 10
        c.checkpoint_every = 10
        c.optim.name = "adamw"
        c.optim.lr = 1e-3
        c.optim.weight_decay = 1e-4
        c.optim.end_lr = 0.0
        c.eval.shorter_side = 64
        c.eval.size = (128, 128)
        c.eval.batch_size = 8
        c.dtype = "float32"
    elif arg:
        raise ValueError(f"experiments/deeplabv3plus_voc.py: unknown arg {arg!r}; valid: quick")
    return c
