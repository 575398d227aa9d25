"""Fast-SCNN (Poudel et al., 2019): learning-to-downsample, global feature extractor
with pyramid pooling, feature fusion, a light classifier.

    python -m jaxseg.train --config experiments/fast_scnn.py --workdir runs/fast_scnn
    python -m jaxseg.train --config experiments/fast_scnn.py:quick --workdir runs/fast_scnn_quick

A real-time network: about 1.1 M parameters.
"""

from jaxseg.configs import base_config, cpu_quick, sgd_512


def get_config(arg=None):
    c = base_config(model="fast_scnn")
    sgd_512(c)
    c.optim.lr = 0.045
    if arg == "quick":
        cpu_quick(c, steps=300)
    elif arg:
        raise ValueError(f"experiments/fast_scnn.py: unknown arg {arg!r}; valid: quick")
    return c
