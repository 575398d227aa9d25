"""DeepLab v1 LargeFOV (Chen et al., ICLR 2015): DeepLab's VGG16 at output stride 8, fc6 as a
3x3 conv with dilation 12 to 1024 channels, fc7 1024, dropout 0.5.

    python -m jaxseg.train --config experiments/deeplab_largefov.py --workdir runs/largefov
    python -m jaxseg.train --config experiments/deeplab_largefov.py:quick --workdir runs/lfov_q

The recipe follows the paper where our options reach: 321x321 crops, batch 20, SGD momentum
0.9, weight decay 5e-4, 6000 steps, float32/bfloat16 by device. It differs in: the
paper's lr 1e-3 stepped down x0.1 every 2000 iterations, with fc8 at 10x, is poly(0.9)
from 1e-3 here (no per-layer rates), and the authors start from ImageNet VGG16 with fc6/fc7
subsampled from its classifier (`--config.model.pretrained=vgg16.pth` fills the 13 convs
only). The dense CRF is a post-processing step of evaluation. `quick` is a CPU smoke run:
64x64 `shapes`, 200 AdamW steps, from scratch.
"""

from jaxseg.configs import base_config, cpu_quick


def get_config(arg=None):
    c = base_config(model="deeplab_largefov")
    c.data.image_size = (321, 321)
    c.eval.size = (321, 321)
    c.augment.scale_range = (0.5, 1.5)
    c.batch_size = 20
    c.total_steps = 6000
    c.eval_every = 1000
    c.checkpoint_every = 1000
    c.optim.name = "sgd"
    c.optim.lr = 1e-3
    c.optim.weight_decay = 5e-4
    c.optim.schedule = "poly"
    c.dtype = "auto"
    if arg == "quick":
        cpu_quick(c, steps=200)
    elif arg:
        raise ValueError(f"experiments/deeplab_largefov.py: unknown arg {arg!r}; valid: quick")
    return c
