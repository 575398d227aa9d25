"""The per-pixel linear classifier against a PyTorch twin through a saved state dict."""

import numpy as np

from jaxseg.models.linear import PixelLinear
from tests.torch_support import check_parity, torch


def _torch_linear(cin, num_classes):
    """Written from jaxseg/models/linear.py's docstring (one 1x1 convolution with bias; no
    external release): the conv held as `Conv[0]`, the Flax module's auto-name `Conv_0`."""
    nn = torch().nn

    class PixelLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.Conv = nn.ModuleList([nn.Conv2d(cin, num_classes, 1)])

        def forward(self, x):
            return self.Conv[0](x)

    return PixelLinear()


def test_linear_matches_the_pytorch_twin(tmp_path):
    torch().manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 13, 17, 3)).astype(np.float32)
    check_parity(
        PixelLinear(5), _torch_linear(3, 5), x, tmp_path, record="linear: twin from docstring"
    )
