"""Swin encoders, Swin-Unet and Semantic FPN: counts against the papers (or a hand count),
shapes at odd sizes, the shift mask, and parity with timm's Swin-T through a weights file
(skipped without torch and timm)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import pretrained
from jaxseg.models.semantic_fpn import SemanticFPN, nearest_resize
from jaxseg.models.swin import SwinTransformer, shift_mask, window_and_shift
from jaxseg.models.swin_unet import SwinUNet
from jaxseg.state import count_params
from tests.test_models_vit import _perturbed, _save, _timm
from tests.torch_support import assert_close_relative, state_dict_numpy, torch


def _count(model, size=(64, 64)):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *size, 3))))
    return count_params(variables["params"])


def test_swin_unet_count_matches_paper():
    # Paper (Cao et al., Synapse, 9 classes, 224x224): 27.17 M, quoted from memory; the
    # depths (2, 2, 2, 2) are those of the official configs/swin_tiny_patch4_window7_224_lite.
    n = _count(SwinUNet(9), (224, 224))
    assert n == 27_168_900
    assert abs(n / 1e6 / 27.17 - 1) < 0.03


def test_swin_t_encoder_count_is_timms():
    # timm's swin_tiny_patch4_window7_224 without its classifier: 27,519,354 parameters.
    assert _count(SwinTransformer("swin_t"), (224, 224)) == 27_519_354


def fpn_hand_count(widths, backbone_params, classes):
    """mmseg's FPN (256 channels, 1x1 laterals and 3x3 outputs with biases) and FPNHead
    (128 channels; 1, 1, 2, 3 conv+BN per level; 1x1 classifier with bias)."""
    neck = sum(c * 256 + 256 for c in widths) + 4 * (256 * 256 * 9 + 256)
    convs = [(256, 1), (256, 1), (256, 2), (256, 3)]
    head = sum(256 * 128 * 9 + 256 + (n - 1) * (128 * 128 * 9 + 256) for _, n in convs)
    return backbone_params + neck + head + 128 * classes + classes


@pytest.mark.parametrize(
    "backbone,resnet_params,exact",
    # torchvision's ResNet-50/101 without fc: 23,508,032 / 42,500,160 parameters.
    [("resnet50", 23_508_032, 28_478_675), ("resnet101", 42_500_160, 47_470_803)],
)
def test_semantic_fpn_count_is_the_hand_count(backbone, resnet_params, exact):
    n = _count(SemanticFPN(19, backbone))
    assert n == exact == fpn_hand_count((256, 512, 1024, 2048), resnet_params, 19)


@pytest.mark.parametrize("size", [(36, 44), (61, 97), (224, 224)])
@pytest.mark.parametrize(
    "model",
    [SwinUNet(5), SemanticFPN(5, "resnet18")],
    ids=["swin_unet", "semantic_fpn"],
)
def test_shapes_at_odd_sizes(model, size):
    x = jnp.zeros((2, *size, 3))
    (logits, aux), _ = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x))
    assert logits.shape == (2, *size, 5) and logits.dtype == jnp.float32 and aux == {}


def test_encoder_features_and_strides():
    x = jnp.zeros((1, 61, 97, 3))
    feats = jax.eval_shape(
        lambda: SwinTransformer("swin_t").init_with_output(jax.random.key(0), x)[0]
    )
    assert feats["patch_embed"].shape == (1, 16, 25, 96)
    assert feats["merged2"].shape == feats["stage2"].shape == (1, 8, 13, 192)
    assert feats["stage3"].shape == (1, 4, 7, 384)
    assert feats["stage4"].shape == feats["norm"].shape == (1, 2, 4, 768)


def test_window_shift_and_mask_follow_timm():
    assert window_and_shift(56, 56) == ((7, 7), (3, 3))
    assert window_and_shift(7, 14) == ((7, 7), (0, 3))  # a side that fits one window
    assert window_and_shift(4, 9) == ((4, 7), (0, 3))
    mask = shift_mask(14, 14, (7, 7), (3, 3))
    assert mask.shape == (4, 49, 49)
    assert not mask[0].any()  # the top-left window holds one region
    # The bottom-right window joins four regions: 4x4, 4x3, 3x4, 3x3 tokens.
    same = (mask[3] == 0).sum(axis=1)
    assert sorted(set(same.tolist())) == [9, 12, 16]


def test_nearest_resize_uses_torchs_index_rule():
    x = jnp.arange(5.0).reshape(1, 5, 1, 1)
    np.testing.assert_array_equal(
        nearest_resize(x, (9, 1))[0, :, 0, 0], [0, 0, 1, 1, 2, 2, 3, 3, 4]
    )


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_swin_t_matches_timm_through_a_weights_file(tmp_path, suffix):
    """timm's Swin-T state dict, written as a file, loads as Swin-Unet's encoder weights
    (the four stage-3 blocks beyond its depth 2 unused), and the full Swin-T encoder loaded
    from it gives timm's features at 224x224 (shifted windows, masks and merging)."""
    t, timm = torch(), _timm()
    t.manual_seed(0)
    ref = _perturbed(
        timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0)
    )
    path = tmp_path / f"swin{suffix}"
    _save(state_dict_numpy(ref), path)
    model = SwinUNet(4)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    lines = []
    pretrained.load_pretrained(
        model, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), path, lines.append
    )
    assert lines[0].endswith("loaded 119 tensors")
    unused = [line for line in lines if "unused" in line]
    assert len(unused) == 1 and ": 52 unused: layers.2.blocks.2." in unused[0]

    if suffix == ".pth":
        return  # the same arrays: the forward is checked once, from the .safetensors file
    encoder = SwinTransformer("swin_t")
    shapes = jax.eval_shape(lambda: encoder.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    variables = pretrained.load_pretrained(
        model, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), path, lambda _: None
    )
    x = np.random.default_rng(1).normal(size=(2, 224, 224, 3)).astype(np.float32)
    with t.no_grad():
        expected = ref.forward_features(t.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    feats = jax.jit(encoder.apply)(variables, x)
    assert_close_relative(np.asarray(feats["norm"]), expected, 1e-4)
