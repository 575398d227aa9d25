"""SegNet (Badrinarayanan et al., 2017): VGG16-BN encoder; the decoder upsamples with
the encoder's max-pooling indices.

    python -m jaxseg.train --config experiments/segnet.py --workdir runs/segnet
    python -m jaxseg.train --config experiments/segnet.py:quick --workdir runs/segnet_quick

--config.model.unpool_impl=scatter runs the unpooling as a scatter instead of
mask-and-repeat (the same function). ImageNet vgg16_bn weights load with
--config.model.pretrained=vgg16_bn.pth.
"""

from jaxseg.configs import base_config, cpu_quick


def get_config(arg=None):
    c = base_config()
    c.model.name = "segnet"
    c.data.image_size = (512, 512)
    c.data.eval_size = (512, 512)
    c.data.scale_range = (0.5, 2.0)
    c.total_steps = 40_000
    c.eval_every = 4000
    c.checkpoint_every = 2000
    c.optim.name = "sgd"
    c.optim.lr = 0.01
    c.optim.schedule = "poly"
    c.dtype = "auto"
    if arg == "quick":
        cpu_quick(c, steps=200)
    elif arg:
        raise ValueError(f"experiments/segnet.py: unknown arg {arg!r}; valid: quick")
    return c
