"""SegNet (Badrinarayanan et al., 2017): VGG16-BN encoder; the decoder upsamples with
the encoder's max-pooling indices.

    python -m jaxseg.train --config experiments/segnet.py --workdir runs/segnet
    python -m jaxseg.train --config experiments/segnet.py:quick --workdir runs/segnet_quick

--config.model.unpool_impl=scatter runs the unpooling as a scatter instead of
mask-and-repeat (the same function). ImageNet vgg16_bn weights load with
--config.model.pretrained=vgg16_bn.pth.
"""

from jaxseg.configs import base_config, cpu_quick, sgd_512


def get_config(arg=None):
    c = base_config(model="segnet")
    sgd_512(c)
    if arg == "quick":
        cpu_quick(c, steps=200)
    elif arg:
        raise ValueError(f"experiments/segnet.py: unknown arg {arg!r}; valid: quick")
    return c
