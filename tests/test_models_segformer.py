"""SegFormer / MiT: parameter counts against the paper, shapes at odd sizes, the
HuggingFace -> original state-dict rewrite, and parity with transformers'
SegformerForSemanticSegmentation (skipped without torch and transformers)."""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import pretrained
from jaxseg.models.mit import MixVisionTransformer, drop_path
from jaxseg.models.segformer import SegFormer, hf_to_original, is_hf_state_dict, to_original
from tests.torch_support import (
    assert_close_relative,
    check_parity,
    randomize_batch_norm,
    state_dict_numpy,
    torch,
    torchvision,
)

# Exact counts (150 classes, params only) and the paper's Table 1 (ADE20K models, millions).
COUNTS = {
    "mit_b0": (3_752_694, 3.8),
    "mit_b1": (13_715_798, 13.7),
    "mit_b2": (27_461_974, 27.5),
    "mit_b3": (47_337_814, 47.3),
    "mit_b4": (64_108_374, 64.1),
    "mit_b5": (84_708_694, 84.7),
}


def _shapes(model, x):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def _count(model, size=(64, 64)):
    variables = _shapes(model, jnp.zeros((1, *size, 3)))
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables["params"]))


def _random_variables(model, x, seed=0):
    """Variables of model's structure drawn with numpy: jax's random init compiles for
    longer on 2 CPU cores (~200 differently shaped draws) than the forward under test."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(size=leaf.shape).astype(np.float32) / np.sqrt(fan_in)
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return 0.1 * rng.normal(size=leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, _shapes(model, x))


@pytest.mark.parametrize("backbone", list(COUNTS))
def test_param_counts_match_paper(backbone):
    exact, paper_millions = COUNTS[backbone]
    n = _count(SegFormer(150, backbone=backbone))
    print(f"SegFormer-{backbone[-2:].upper()}: {n:,} params vs paper {paper_millions}M")
    assert n == exact
    assert abs(n / 1e6 - paper_millions) <= 0.02 * paper_millions


def test_unknown_backbone_lists_valid_values():
    x = jnp.zeros((1, 32, 32, 3))
    for module in (SegFormer(3, backbone="mit_b6"), MixVisionTransformer("resnet50")):
        with pytest.raises(ValueError, match="backbone=.*valid: mit_b0, mit_b1, .*mit_b5"):
            module.init(jax.random.key(0), x)


def _feature_shapes(batch, size):
    h, w = (size[0] - 1) // 4 + 1, (size[1] - 1) // 4 + 1
    shapes = []
    for c in (32, 64, 160, 256):
        shapes.append((batch, h, w, c))
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return shapes


@pytest.mark.parametrize("size", [(37, 45), (64, 64), (29, 30), (97, 33)])
def test_shapes_at_odd_sizes(size):
    x = jnp.zeros((2, *size, 3))
    logits, aux = jax.eval_shape(lambda: SegFormer(5).init_with_output(jax.random.key(0), x)[0])
    assert logits.shape == (2, *size, 5) and logits.dtype == jnp.float32
    assert aux == {}
    features = jax.eval_shape(
        lambda: MixVisionTransformer().init_with_output(jax.random.key(0), x)[0]
    )
    assert list(features) == ["stage1", "stage2", "stage3", "stage4"]
    assert [f.shape for f in features.values()] == _feature_shapes(2, size)


def test_too_small_input_raises():
    with pytest.raises(ValueError, match="input sides >= 29"):
        _shapes(SegFormer(2), jnp.zeros((1, 28, 64, 3)))


def test_forward_eval_is_finite_and_train_mode_uses_dropout_rng():
    model = SegFormer(4)
    x = jax.random.normal(jax.random.key(1), (2, 37, 45, 3))
    variables = _random_variables(model, x)

    @jax.jit
    def run(key):
        evaluated, _ = model.apply(variables, x)
        (trained, _), updates = model.apply(
            variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
        )
        return evaluated, trained, updates

    evaluated, a, updates = run(jax.random.key(2))
    _, b, _ = run(jax.random.key(3))
    assert evaluated.shape == a.shape == (2, 37, 45, 4) and a.dtype == jnp.float32
    assert bool(jnp.isfinite(evaluated).all()) and bool(jnp.isfinite(a).all())
    assert not np.allclose(a, b)  # decoder dropout and drop path draw from "dropout"
    assert not np.allclose(evaluated, a)
    np.testing.assert_array_equal(a, run(jax.random.key(2))[1])
    bn = updates["batch_stats"]["decode_head"]["linear_fuse"]["bn"]
    assert not np.allclose(
        bn["mean"], variables["batch_stats"]["decode_head"]["linear_fuse"]["bn"]["mean"]
    )


def test_bfloat16_keeps_f32_params_and_returns_f32_logits():
    x = jnp.zeros((1, 40, 40, 3))
    variables = _shapes(SegFormer(3, dtype=jnp.bfloat16), x)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))
    logits, _ = jax.eval_shape(SegFormer(3, dtype=jnp.bfloat16).apply, variables, x)
    assert logits.dtype == jnp.float32 and logits.shape == (1, 40, 40, 3)


def test_drop_path_drops_whole_samples_and_rescales():
    class Wrap(nn.Module):
        def __call__(self, x, train=False):
            return drop_path(self, x, 0.25, train)

    x = jnp.ones((256, 2, 3, 4))
    y = Wrap().apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})
    per_sample = np.asarray(y).reshape(256, -1)
    kept = per_sample[:, 0] != 0
    np.testing.assert_allclose(per_sample[kept], 1 / 0.75, rtol=1e-6)
    np.testing.assert_array_equal(per_sample[~kept], 0)
    assert 0.6 < kept.mean() < 0.9
    np.testing.assert_array_equal(Wrap().apply({}, x, train=False), x)


def _hub_block(prefix, c=4):
    """A few keys of one HF block as transformers < 5 and the hub store them."""
    r = np.random.default_rng(0)
    return {
        f"{prefix}.attention.self.query.weight": r.normal(size=(c, c)),
        f"{prefix}.attention.self.key.weight": r.normal(size=(c, c)),
        f"{prefix}.attention.self.key.bias": r.normal(size=(c,)),
        f"{prefix}.attention.self.value.weight": r.normal(size=(c, c)),
        f"{prefix}.attention.self.value.bias": r.normal(size=(c,)),
        f"{prefix}.attention.output.dense.weight": r.normal(size=(c, c)),
        f"{prefix}.layer_norm_2.weight": r.normal(size=(c,)),
        f"{prefix}.mlp.dense1.weight": r.normal(size=(4 * c, c)),
    }


def test_hf_to_original_renames_and_fuses_kv_without_torch():
    hub = _hub_block("segformer.encoder.block.2.1")
    hub.update(
        {
            "segformer.encoder.patch_embeddings.0.layer_norm.bias": np.zeros(3),
            "segformer.encoder.layer_norm.3.weight": np.zeros(3),
            "decode_head.linear_c.3.proj.weight": np.zeros((2, 3)),
            "decode_head.linear_fuse.weight": np.zeros((2, 8, 1, 1)),
            "decode_head.batch_norm.running_var": np.zeros(2),
            "decode_head.classifier.bias": np.zeros(5),
        }
    )
    assert is_hf_state_dict(hub)
    out = hf_to_original(hub)
    b = "backbone.block3.1"
    assert sorted(out) == sorted(
        [
            f"{b}.attn.q.weight",
            f"{b}.attn.kv.weight",
            f"{b}.attn.kv.bias",
            f"{b}.attn.proj.weight",
            f"{b}.norm2.weight",
            f"{b}.mlp.fc1.weight",
            "backbone.patch_embed1.norm.bias",
            "backbone.norm4.weight",
            "decode_head.linear_c4.proj.weight",
            "decode_head.linear_fuse.conv.weight",
            "decode_head.linear_fuse.bn.running_var",
            "decode_head.linear_pred.bias",
        ]
    )
    src = "segformer.encoder.block.2.1.attention.self"
    # Keys first, then values: the original splits kv's output rows in that order.
    np.testing.assert_array_equal(
        out[f"{b}.attn.kv.weight"],
        np.concatenate([hub[f"{src}.key.weight"], hub[f"{src}.value.weight"]]),
    )
    np.testing.assert_array_equal(out[f"{b}.attn.kv.bias"][4:], hub[f"{src}.value.bias"])
    with pytest.raises(ValueError, match="key/value partner"):
        hf_to_original({k: v for k, v in hub.items() if "value.weight" not in k})

    # The in-memory names of transformers >= 5 land on the same keys.
    hf5 = {
        k.replace("encoder.block.2.", "stages.2.blocks.")
        .replace("attention.self.query", "attention.q_proj")
        .replace("attention.self.key", "attention.k_proj")
        .replace("attention.self.value", "attention.v_proj")
        .replace("attention.output.dense", "attention.o_proj")
        .replace("layer_norm_2", "layernorm_after")
        .replace("mlp.dense1", "mlp.fc1"): v
        for k, v in _hub_block("segformer.encoder.block.2.1").items()
    }
    assert sorted(hf_to_original(hf5)) == sorted(k for k in out if k.startswith(b))

    # Original (NVlabs) and ImageNet MiT files pass through untouched.
    original = {"backbone.block1.0.attn.kv.weight": np.zeros(1), "patch_embed1.proj.weight": 0}
    assert not is_hf_state_dict(original) and to_original(original) is original


def _transformers():
    torch()
    # transformers imports torchvision when present: stub its compiled ops.
    with contextlib.suppress(pytest.skip.Exception):
        torchvision()
    return pytest.importorskip("transformers")


def _hf_segformer(t, tf, num_labels):
    """transformers' SegFormer-B0 with random LayerNorms and BatchNorm, returning logits
    upsampled to the input as SegFormer does (HF returns them at stride 4); keys unchanged."""

    class Upsampled(tf.SegformerForSemanticSegmentation):
        def forward(self, pixel_values, **kwargs):
            out = super().forward(pixel_values, **kwargs)
            if kwargs:
                return out
            return t.nn.functional.interpolate(
                out.logits, size=pixel_values.shape[2:], mode="bilinear", align_corners=False
            )

    ref = Upsampled(tf.SegformerConfig(num_labels=num_labels)).eval()
    randomize_batch_norm(ref)
    with t.no_grad():
        for m in ref.modules():
            if isinstance(m, t.nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * t.randn_like(m.weight))
                m.bias.copy_(0.1 * t.randn_like(m.bias))
    # HF runs the block and stage LayerNorms at torch's default 1e-5; the original uses 1e-6.
    for name, m in ref.named_modules():
        inner = any(s in name for s in ("patch_embeddings", "sequence_reduction", "attention."))
        if isinstance(m, t.nn.LayerNorm) and not inner:
            m.eps = 1e-6
    return ref


def test_matches_transformers_segformer_b0(tmp_path):
    t, tf = torch(), _transformers()
    t.manual_seed(0)
    ref = _hf_segformer(t, tf, 7)
    x = np.random.default_rng(0).normal(size=(2, 37, 45, 3)).astype(np.float32)
    model = SegFormer(7)
    # Logits and input gradient through a saved .pth of transformers' own key names.
    record = f"SegFormer-B0: transformers {tf.__version__} SegformerForSemanticSegmentation"
    check_parity(model, ref, x, tmp_path, record=record)

    init = _shapes(model, x)
    ref.save_pretrained(tmp_path)  # writes the hub layout (attention.self.key, linear_c.0)
    hub = pretrained.read_state_dict(tmp_path / "model.safetensors")
    assert "segformer.encoder.block.0.0.attention.self.key.weight" in hub
    converted = []
    for state in (state_dict_numpy(ref), hub):
        variables, report = pretrained.convert_state_dict(init, model.adapt_state_dict(state))
        assert report["missing"] == report["mismatched"] == report["unused"] == []
        converted.append(variables)
    jax.tree.map(np.testing.assert_array_equal, *converted)

    with t.no_grad():
        out = ref(t.from_numpy(x.transpose(0, 3, 1, 2)), output_hidden_states=True)
    params = {"params": converted[0]["params"]["backbone"]}
    features = MixVisionTransformer().apply(params, x)
    for ours, theirs in zip(features.values(), out.hidden_states, strict=True):
        assert_close_relative(ours, theirs.numpy().transpose(0, 2, 3, 1), 1e-4)
