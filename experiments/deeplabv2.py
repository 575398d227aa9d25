"""DeepLab v2 (Chen et al., TPAMI 2017), ResNet-101 at output stride 8 with ASPP-v2: the sum
of four 3x3 classifiers at dilations 6, 12, 18, 24.

    python -m jaxseg.train --config experiments/deeplabv2.py --workdir runs/deeplabv2
    python -m jaxseg.train --config experiments/deeplabv2.py:quick --workdir runs/deeplabv2_q

The paper's recipe: 321x321 crops of images rescaled by 0.5-1.5, batch 10, 20k
iterations, SGD momentum 0.9, weight decay 5e-4, "poly" lr 2.5e-4 with power 0.9, from
ImageNet ResNet-101 (`--config.model.pretrained=resnet101.pth`; --config.model.backbone=
resnet50 for the smaller one). It differs in: the paper's 10x lr on the classifier and
its multi-scale input branches (max over scales 1, 0.75, 0.5) are not implemented, and
BatchNorm trains (the authors froze it). `quick` is a CPU smoke run: ResNet-18 at 64x64
`shapes`, 200 AdamW steps, from scratch.
"""

from jaxseg.configs import base_config, cpu_quick


def get_config(arg=None):
    c = base_config(model="deeplabv2")
    c.model.backbone = "resnet101"
    c.data.image_size = (321, 321)
    c.eval.size = (321, 321)
    c.augment.scale_range = (0.5, 1.5)
    c.batch_size = 10
    c.total_steps = 20_000
    c.eval_every = 2000
    c.checkpoint_every = 2000
    c.optim.name = "sgd"
    c.optim.lr = 2.5e-4
    c.optim.weight_decay = 5e-4
    c.optim.schedule = "poly"
    c.dtype = "auto"
    if arg == "quick":
        cpu_quick(c, steps=200)
        c.model.backbone = "resnet18"
    elif arg:
        raise ValueError(f"experiments/deeplabv2.py: unknown arg {arg!r}; valid: quick")
    return c
