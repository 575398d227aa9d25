"""MobileNetV2 backbone: torchvision's count, strides (dilated at output stride 16 / 8), and
parity with torchvision's mobilenet_v2().features through the ImageNet key layout
(skipped without torch)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import pretrained
from jaxseg.models.mobilenetv2 import MobileNetV2
from jaxseg.state import count_params
from tests.torch_support import assert_close_relative, randomize_batch_norm, torch, torchvision

# torchvision mobilenet_v2(): 3,504,872 parameters, of which the classifier
# (Linear 1280 -> 1000) holds 1,281,000.
FEATURES = 3_504_872 - 1_281_000


def _shapes(model, x):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def test_count_and_strides():
    x = jnp.zeros((1, 37, 45, 3))
    for stride, high in ((32, (2, 2)), (8, (5, 6))):
        model = MobileNetV2(stride)
        variables = _shapes(model, x)
        assert count_params(variables["params"]) == FEATURES == 2_223_872
        out = jax.eval_shape(lambda v, m=model: m.apply(v, x), variables)
        assert out["high"].shape == (1, *high, 320) and out["low"].shape == (1, 10, 12, 24)
    with pytest.raises(ValueError, match="output_stride"):
        _shapes(MobileNetV2(4), x)


def test_features_match_torchvision():
    t, tv = torch(), torchvision()
    t.manual_seed(0)
    ref = tv.models.mobilenet_v2().eval()
    randomize_batch_norm(ref)
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items() if v.ndim > 0}
    x = np.random.default_rng(0).standard_normal((1, 49, 61, 3)).astype(np.float32)
    model = MobileNetV2()
    variables, report = pretrained.convert_state_dict(
        _shapes(model, x), state, MobileNetV2.torch_renames
    )
    assert report["missing"] == [] and report["mismatched"] == []
    assert report["unused"] == ["classifier.1.bias", "classifier.1.weight"]
    ours = jax.jit(model.apply)(variables, x)
    with t.no_grad():
        y = t.from_numpy(x.transpose(0, 3, 1, 2))
        theirs = {}
        for i, layer in enumerate(ref.features):
            y = layer(y)
            theirs[i] = y.numpy().transpose(0, 2, 3, 1)
    for key, i in (("low", 3), ("c4", 13), ("high", 17), ("last", 18)):
        assert_close_relative(ours[key], theirs[i], 1e-4)
