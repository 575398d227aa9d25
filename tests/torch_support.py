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


def _main_output(out):
    """A model's main logits: jaxseg returns (logits, aux); a twin a tensor or {"out": ...}."""
    if isinstance(out, tuple):
        out = out[0]
    if isinstance(out, dict):
        out = out["out"]
    return out


def check_parity(
    model, ref, x, tmp_path, *, tol=1e-4, grad_tol=1e-3, grad_float64=False, record=None
):
    """One model family against its PyTorch reference, the way a user imports weights.

    model: the Flax module; ref: the torch module (random BatchNorm statistics are set
    here); x: f32[B,H,W,C]. `ref`'s state dict is saved as a .pth and read back by
    `pretrained.load_pretrained` (nothing may be missing, mismatched or unused). Then, in
    eval mode: max |logits - ref logits| <= tol * max(1, max |ref logits|), and the
    gradient of sum(logits * w) (w fixed and random) with respect to x within grad_tol
    relative (of max |ref gradient|). When the reference returns a dict, its other
    entries are compared with the model's aux outputs of the same name, bounded alike.
    grad_float64: the gradients of both in float64 (model.clone(dtype=float64) under
    jax.enable_x64), for a network with so many ReLUs that in float32 one of them always
    sits within rounding of zero and opens in one framework only (moving the gradient by
    1e-2). `record` (e.g. "SETR-PUP: twin of ...") names the row; with JAXSEG_PARITY_LOG
    set, the measured numbers are appended to that file as one JSON line.
    Returns {"max_abs": ..., "grad_rel": ...}.
    """
    import json
    import os

    import jax
    import jax.numpy as jnp

    from jaxseg.models import pretrained

    t = torch()
    ref = ref.eval()
    randomize_batch_norm(ref)
    path = tmp_path / "reference.pth"
    t.save(ref.state_dict(), path)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.asarray(x), train=False))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    lines = []
    variables = pretrained.load_pretrained(model, zeros, path, lines.append, x.shape[1:])
    assert len(lines) == 1, lines  # all loaded: nothing missing, mismatched or unused

    out_shape = jax.eval_shape(lambda v, y: _main_output(model.apply(v, y)), variables, x).shape
    w = np.random.default_rng(1).standard_normal(out_shape).astype(np.float32)

    def loss(y, v, m=model):
        out = m.apply(v, y, train=False)
        return (_main_output(out) * w).sum(), out

    # The variables are an argument, as in training: closed over, XLA:CPU folds them as
    # constants, and ResNet-50's input gradient then drifts 2e-3 (relative) from torch's
    # in f32 (1.8e-6 as an argument; both agree to 1e-14 in f64).
    (_, out), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(jnp.asarray(x), variables)
    logits = _main_output(out)
    xt = t.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    ref_out = ref(xt)
    expected = _main_output(ref_out).detach().numpy().transpose(0, 2, 3, 1)
    if grad_float64:
        with jax.enable_x64(True):
            v64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
            model64 = model.clone(dtype=jnp.float64)
            step = jax.jit(jax.grad(lambda y, v: loss(y, v, model64)[0]))
            grad = step(jnp.asarray(x, jnp.float64), v64)
        ref, xt = ref.double(), t.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64))
        xt.requires_grad_(True)
        ref_out = ref(xt)
    dtype = xt.dtype
    (_main_output(ref_out) * t.from_numpy(w.transpose(0, 3, 1, 2)).to(dtype)).sum().backward()
    expected_grad = xt.grad.numpy().transpose(0, 2, 3, 1)
    if isinstance(ref_out, dict) and len(ref_out) > 1:
        aux = out[1]
        for key in sorted(set(ref_out) - {"out"}):
            theirs = ref_out[key].detach().double().numpy().transpose(0, 2, 3, 1)
            aux_abs = float(np.abs(np.asarray(aux[key], np.float64) - theirs).max())
            bound = tol * max(1.0, float(np.abs(theirs).max()))
            assert aux_abs <= bound, f"aux {key!r}: max |ours - reference| = {aux_abs:.3g}"

    assert logits.shape == expected.shape, (logits.shape, expected.shape)
    max_abs = float(np.abs(np.asarray(logits, np.float64) - expected).max())
    grad_rel = float(
        np.abs(np.asarray(grad, np.float64) - expected_grad).max()
        / max(np.abs(expected_grad).max(), 1e-12)
    )
    if record and os.environ.get("JAXSEG_PARITY_LOG"):
        with open(os.environ["JAXSEG_PARITY_LOG"], "a") as f:
            row = {"family": record, "max_abs": max_abs, "grad_rel": grad_rel}
            row["logits_max"] = float(np.abs(expected).max())
            row["grad_dtype"] = "float64" if grad_float64 else "float32"
            f.write(json.dumps(row) + "\n")
    # f32 rounding grows with the logits (random heads under random BatchNorm reach 80):
    # the bound is tol for logits up to 1 in magnitude, tol * max |logits| beyond.
    scale = max(1.0, float(np.abs(expected).max()))
    assert max_abs <= tol * scale, f"max |logits - reference| = {max_abs:.3g}, max |logits| {scale}"
    assert grad_rel <= grad_tol, f"input gradient: max relative error {grad_rel:.3g}"
    return {"max_abs": max_abs, "grad_rel": grad_rel}
