"""FCN-8s on VGG16 (Long et al., 2015): fc6/fc7 as convolutions, score layers on
pool3 and pool4, learnable (bilinear-initialised) 2x and 8x upsampling.

    python -m jaxseg.train --config experiments/fcn_vgg16.py --workdir runs/fcn_vgg16
    python -m jaxseg.train --config experiments/fcn_vgg16.py:quick --workdir runs/fcn_vgg16_quick

--config.model.output_stride=32 or 16 gives FCN-32s or FCN-16s; ImageNet VGG16 weights load
with --config.model.pretrained=vgg16.pth.
"""

from jaxseg.configs import base_config, cpu_quick, sgd_512


def get_config(arg=None):
    c = base_config(model="fcn_vgg16")
    c.model.output_stride = 8
    sgd_512(c)
    c.optim.lr = 1e-3
    if arg == "quick":
        cpu_quick(c, steps=200)
    elif arg:
        raise ValueError(f"experiments/fcn_vgg16.py: unknown arg {arg!r}; valid: quick")
    return c
