"""PyTorch references for the parity tests (they skip without torch; `.[parity]` installs it).

The CPU build of torch installs here from a local wheel (`pip install torch==2.13.0`);
PyPI's torchvision wheels are CUDA builds whose compiled ops fail to load against
it, and torchvision's import then fails in its meta-registrations for those ops.
The models themselves are plain Python, so `torchvision()` stubs that module out.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest


def torch():
    return pytest.importorskip("torch")


def torchvision():
    torch()
    try:
        import torchvision as tv
    except (RuntimeError, ImportError):
        for name in [n for n in sys.modules if n.startswith("torchvision")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("stub")
        try:
            import torchvision as tv
        except ImportError:
            pytest.skip("torchvision is not installed")
    return tv


def state_dict_numpy(module) -> dict[str, np.ndarray]:
    """A torch module's state dict as float32 numpy arrays."""
    return {k: v.detach().float().numpy() for k, v in module.state_dict().items() if v.ndim > 0}


def randomize_batch_norm(module, seed: int = 0) -> None:
    """Random running statistics and affine parameters, so parity covers BatchNorm."""
    t = torch()
    gen = t.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, t.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(t.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(t.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(t.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(t.randn(n, generator=gen) * 0.1)


def assert_close_relative(actual, expected, tol: float = 1e-4) -> None:
    """max |actual - expected| <= tol * max |expected|."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12)
    assert err <= tol, f"max relative error {err:.3g} > {tol}"
