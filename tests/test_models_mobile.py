"""MobileNetV3-Large, LR-ASPP and Fast-SCNN: exact parameter counts, shapes at odd sizes,
the space-to-batch atrous path, and parity with torchvision (skipped without torch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import pretrained
from jaxseg.models.fast_scnn import FastSCNN
from jaxseg.models.lraspp import LRASPP
from jaxseg.models.mobilenetv3 import MobileNetV3Large, imagenet_to_backbone, make_divisible
from tests.torch_support import (
    assert_close_relative,
    check_parity,
    randomize_batch_norm,
    state_dict_numpy,
    torch,
    torchvision,
)

# torchvision mobilenet_v3_large: 5,483,032 params, of which its classifier
# (Linear 960->1280, Linear 1280->1000) holds 2,511,080.
MOBILENET_V3_LARGE_FEATURES = 2_971_952


def _param_count(module, shape=(1, 64, 64, 3)) -> int:
    variables = _shapes(module, jnp.zeros(shape))
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables["params"]))


def _nchw(x: np.ndarray):
    return torch().from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(y) -> np.ndarray:
    return y.detach().numpy().transpose(0, 2, 3, 1)


def _shapes(model, x):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def _random_variables(model, x, seed=0):
    """Variables of model's structure drawn with numpy: jax's init compiles for
    minutes on 2 CPU cores, longer than the forward passes under test."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(size=leaf.shape).astype(np.float32) / np.sqrt(fan_in)
        if name == "var":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        if name == "scale":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return 0.1 * rng.normal(size=leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, _shapes(model, x))


def _convert(model, x, state, renames=()):
    # Every leaf the report does not list as missing is filled from the state dict.
    return pretrained.convert_state_dict(_shapes(model, x), state, renames)


def test_make_divisible_matches_torchvision_squeeze_widths():
    # SE widths of mobilenet_v3_large: expanded // 4 rounded to multiples of 8, never < 90%.
    assert [make_divisible(c // 4) for c in (72, 120, 480, 672, 960)] == [24, 32, 120, 168, 240]


@pytest.mark.parametrize("dilated", [False, True])
def test_mobilenet_v3_large_count_and_strides(dilated):
    model = MobileNetV3Large(dilated=dilated)
    assert _param_count(model) == MOBILENET_V3_LARGE_FEATURES
    x = jnp.zeros((1, 37, 45, 3))
    out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x)[0])
    high = (3, 3) if dilated else (2, 2)  # ceil(37/16), ceil(45/16) vs ceil(./32)
    assert out["high"].shape == (1, *high, 960)
    assert out["low"].shape == (1, 5, 6, 40)
    assert {k: v.shape[-1] for k, v in out.items()} == {
        "c1": 16,
        "c2": 24,
        "low": 40,
        "c3": 40,
        "c4": 112,
        "high": 960,
    }


def test_mobilenet_v3_space_to_batch_equals_plain():
    x = jax.random.normal(jax.random.key(1), (1, 37, 45, 3))
    plain = MobileNetV3Large(dilated=True)
    fast = MobileNetV3Large(dilated=True, atrous_impl="space_to_batch")
    variables = _random_variables(plain, x)
    # One jit for both: a compile costs more than the forward passes.
    expected, actual = jax.jit(lambda v: (plain.apply(v, x), fast.apply(v, x)))(variables)
    np.testing.assert_allclose(actual["high"], expected["high"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="atrous_impl"):
        MobileNetV3Large(atrous_impl="fast").apply(variables, x)


def test_mobilenet_v3_large_matches_torchvision():
    t, tv = torch(), torchvision()
    t.manual_seed(0)
    ref = tv.models.mobilenet_v3_large(weights=None, dilated=True).eval()
    randomize_batch_norm(ref)
    classifier = sum(p.numel() for p in ref.classifier.parameters())
    assert sum(p.numel() for p in ref.parameters()) - classifier == MOBILENET_V3_LARGE_FEATURES

    x = np.random.default_rng(0).normal(size=(1, 65, 71, 3)).astype(np.float32)
    model = MobileNetV3Large(dilated=True)
    state = state_dict_numpy(ref)
    variables, report = _convert(model, x, state, MobileNetV3Large.torch_renames)
    assert not report["missing"] and not report["mismatched"]
    assert report["unused"] and all(k.startswith("classifier.") for k in report["unused"])

    out = jax.jit(model.apply)(variables, x)
    with t.no_grad():
        low = ref.features[:5](_nchw(x))
        high = ref.features[5:](low)
    assert_close_relative(out["low"], _nhwc(low), 1e-4)
    assert_close_relative(out["high"], _nhwc(high), 1e-4)
    assert out["high"].shape == (1, 5, 5, 960)


def test_lraspp_count_and_odd_shapes():
    assert _param_count(LRASPP(21)) == 3_221_538  # torchvision's model card
    x = jnp.zeros((2, 37, 45, 3))
    logits, aux = jax.eval_shape(lambda: LRASPP(5).init_with_output(jax.random.key(0), x)[0])
    assert logits.shape == (2, 37, 45, 5) and logits.dtype == jnp.float32 and aux == {}
    bf16 = LRASPP(5, dtype=jnp.bfloat16)
    logits, _ = jax.eval_shape(lambda: bf16.init_with_output(jax.random.key(0), x)[0])
    assert logits.dtype == jnp.float32


def test_lraspp_matches_torchvision(tmp_path):
    t, tv = torch(), torchvision()
    t.manual_seed(0)
    seg = tv.models.segmentation
    ref = seg.lraspp_mobilenet_v3_large(num_classes=5, weights=None, weights_backbone=None)
    x = np.random.default_rng(1).normal(size=(1, 65, 71, 3)).astype(np.float32)
    model = LRASPP(5)
    check_parity(model, ref, x, tmp_path, record=f"LR-ASPP: torchvision {tv.__version__}")

    # An ImageNet classification file, mapped by LRASPP.adapt_state_dict (what
    # load_pretrained applies), fills the whole backbone and nothing else.
    imagenet = state_dict_numpy(tv.models.mobilenet_v3_large(weights=None))
    assert LRASPP.adapt_state_dict(imagenet) == imagenet_to_backbone(imagenet)
    _, report = _convert(model, x, LRASPP.adapt_state_dict(imagenet))
    assert not report["mismatched"] and not report["unused"]
    assert report["missing"] and all(k.startswith("classifier.") for k in report["missing"])
    assert len(report["loaded"]) == len(imagenet) - 4  # all but the classifier's 2 Linear


def test_fast_scnn_count():
    variables = _shapes(FastSCNN(19), jnp.zeros((1, 64, 64, 3)))
    leaves = jax.tree_util.tree_leaves_with_path(variables["params"])
    total = sum(int(np.prod(v.shape)) for _, v in leaves)
    batch_norm = sum(int(np.prod(v.shape)) for p, v in leaves if p[-2].key == "bn")
    # Paper: 1.11M; the difference is BatchNorm's scales and offsets (module docstring).
    assert (total, batch_norm) == (1_138_051, 23_680)
    assert abs(total - batch_norm - 1.11e6) / 1.11e6 < 0.005


def test_fast_scnn_odd_shapes_and_space_to_batch():
    x = jax.random.normal(jax.random.key(2), (2, 37, 45, 3))
    plain, fast = FastSCNN(4), FastSCNN(4, atrous_impl="space_to_batch")
    variables = _random_variables(plain, x)
    expected, actual = jax.jit(lambda v: (plain.apply(v, x), fast.apply(v, x)))(variables)
    assert expected[0].shape == (2, 37, 45, 4) and expected[1] == {}
    assert np.isfinite(expected[0]).all()
    np.testing.assert_allclose(actual[0], expected[0], atol=1e-5, rtol=1e-5)
    # Training mode: dropout and BatchNorm updates at an odd size, in bfloat16 compute.
    bf16 = FastSCNN(4, dtype=jnp.bfloat16)
    (logits, _), updates = jax.eval_shape(
        lambda: bf16.apply(
            variables, x, train=True, rngs={"dropout": jax.random.key(0)}, mutable="batch_stats"
        )
    )
    assert logits.shape == (2, 37, 45, 4) and logits.dtype == jnp.float32
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
        variables["batch_stats"]
    )
    with pytest.raises(ValueError, match="atrous_impl"):
        FastSCNN(4, atrous_impl="dilated").apply(variables, x)
