"""BiSeNet V1 (Yu et al., 2018): spatial path + ResNet-18 context path with attention
refinement and feature fusion; two auxiliary heads on the context path, each weighted 1.

    python -m jaxseg.train --config experiments/bisenetv1.py --workdir runs/bisenetv1
    python -m jaxseg.train --config experiments/bisenetv1.py:quick --workdir runs/bisenetv1_q

The paper's light model takes Xception39 as the context path (the release's X39 network:
128-channel auxiliary heads; 1.8 M parameters against ResNet-18's 13.5 M):

    python -m jaxseg.train --config experiments/bisenetv1.py --workdir runs/bisenetv1_x39 \
        --config.model.backbone=xception39

The paper's recipe (Cityscapes): SGD momentum 0.9, weight decay 1e-4, lr 2.5e-2 with
poly(0.9) decay, batch 16, scales 0.75-2.0, 1024x1024 crops, ImageNet ResNet-18
(`--config.model.pretrained=resnet18.pth`, torchvision's file). It differs in: 512x512
crops on `shapes` and 40k steps (configs.sgd_512), and the authors' OHEM loss is
`--config.loss.terms="(('ohem', 1.0),)"`. `quick` is a CPU smoke run from scratch: 64x64
`shapes`, 300 AdamW steps.
"""

from jaxseg.configs import base_config, cpu_quick, sgd_512


def get_config(arg=None):
    c = base_config(model="bisenetv1")
    c.model.backbone = "resnet18"
    c.model.aux_head = True
    c.loss.aux_weights = (("context16", 1.0), ("context8", 1.0))
    sgd_512(c)
    c.optim.lr = 0.025
    c.augment.scale_range = (0.75, 2.0)
    if arg == "quick":
        cpu_quick(c, steps=300)
    elif arg:
        raise ValueError(f"experiments/bisenetv1.py: unknown arg {arg!r}; valid: quick")
    return c
