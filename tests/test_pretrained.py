"""Reading PyTorch-format weight files and mapping them onto Flax variables."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import cli
from jaxseg.models import build_model
from jaxseg.models.layers import ConvTranspose3x3
from jaxseg.models.pretrained import (
    convert_state_dict,
    load_pretrained,
    read_state_dict,
    torch_key,
    transposed_kernels,
)
from jaxseg.train import train_and_evaluate
from tests.torch_support import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_torch_key_maps_names_leaves_and_list_indices():
    assert torch_key(("params", "backbone", "layer1_0", "conv1", "kernel")) == (
        "backbone.layer1.0.conv1.weight"
    )
    assert torch_key(("batch_stats", "classifier", "0", "convs_0_1", "var")) == (
        "classifier.0.convs.0.1.running_var"
    )
    assert torch_key(("params", "patch_embed1", "norm", "scale")) == "patch_embed1.norm.weight"
    assert torch_key(("params", "a", "kernel"), [(r"^a\.", "b.")]) == "b.weight"


def _variables():
    return {
        "params": {
            "backbone": {"conv1": {"kernel": np.zeros((3, 3, 2, 4), np.float32)}},
            "head": {"kernel": np.zeros((4, 5), np.float32), "bias": np.zeros(5, np.float32)},
        },
        "batch_stats": {"backbone": {"bn1": {"mean": np.zeros(4), "var": np.ones(4)}}},
    }


def test_convert_transposes_layouts_and_reports_what_it_could_not_load():
    rng = np.random.default_rng(0)
    conv = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)  # O, I, kh, kw
    linear = rng.normal(size=(5, 4)).astype(np.float32)  # O, I
    state = {
        "conv1.weight": conv,  # an ImageNet checkpoint: no "backbone." prefix
        "bn1.running_mean": np.arange(4, dtype=np.float32),
        "bn1.running_var": np.full(4, 2.0, np.float32),
        "bn1.num_batches_tracked": np.ones(1, np.float32),
        "head.weight": linear[:3],  # another class count
        "fc.weight": np.zeros((10, 4), np.float32),
    }
    out, report = convert_state_dict(_variables(), state)
    np.testing.assert_array_equal(
        out["params"]["backbone"]["conv1"]["kernel"][1, 2, 0, 3], conv[3, 0, 1, 2]
    )
    np.testing.assert_array_equal(out["batch_stats"]["backbone"]["bn1"]["var"], 2.0)
    assert report["missing"] == ["head.bias"]
    assert report["mismatched"] == ["head.weight: file (4, 3), model (4, 5)"]
    assert report["unused"] == ["fc.weight"]
    np.testing.assert_array_equal(out["params"]["head"]["kernel"], 0.0)  # left as it was


class _Upsamplers(nn.Module):
    """Three stride-2 transposed convs, Cin == Cout so that a wrong layout loads silently."""

    @nn.compact
    def __call__(self, x, train=False):
        # torch padding=1, output_padding=1 <-> lax padding (k-1-p, k-1-p+output_padding).
        x = nn.ConvTranspose(4, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)), name="up")(x)
        x = ConvTranspose3x3(4, name="up3")(x)
        return nn.ConvTranspose(
            4, (2, 2), strides=(2, 2), padding="VALID", transpose_kernel=True, name="upt"
        )(x)


def test_transposed_conv_weights_load_as_torch_applies_them(tmp_path):
    """ConvTranspose2d state dicts (stride 2, output padding) through load_pretrained give
    torch's output: flax ConvTranspose, jaxseg's ConvTranspose3x3 and, already in torch's
    order, flax ConvTranspose(transpose_kernel=True)."""
    t = torch()
    t.manual_seed(0)
    ref = t.nn.Module()
    ref.up = t.nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1)
    ref.up3 = t.nn.ConvTranspose2d(4, 4, 3, stride=2)
    ref.upt = t.nn.ConvTranspose2d(4, 4, 2, stride=2)
    t.save(ref.state_dict(), tmp_path / "up.pth")
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 4)).astype(np.float32)
    model = _Upsamplers()
    assert transposed_kernels(model, x.shape[1:]) == {
        ("params", "up", "kernel"),
        ("params", "up3", "kernel"),
    }
    lines = []
    variables = load_pretrained(
        model, model.init(jax.random.key(1), x), tmp_path / "up.pth", lines.append, x.shape[1:]
    )
    assert lines == [f"pretrained {tmp_path / 'up.pth'}: loaded 6 tensors"]
    got = model.apply(variables, x)
    with t.no_grad():
        y = t.from_numpy(x.transpose(0, 3, 1, 2))
        expected = ref.upt(ref.up3(ref.up(y))).numpy().transpose(0, 2, 3, 1)
    assert got.shape == expected.shape == (1, 26, 42, 4)
    assert np.abs(np.asarray(got) - expected).max() <= 1e-5


def test_transposed_kernels_of_the_built_in_models():
    """Found by layer type, whatever the models name them (no torch needed)."""

    def names(model_name):
        paths = transposed_kernels(build_model(model_name, 3), (32, 32, 3))
        return sorted(p[1] for p in paths)

    assert names("espnet") == ["classifier", "up_l2_0", "up_l3_0"]
    assert names("fcn_vgg16") == ["upscore2", "upscore8", "upscore_pool4"]
    assert names("unet") == [f"ConvTranspose2x2_{i}" for i in range(4)]
    assert names("segnet") == []


def test_read_npz_and_safetensors_alike(tmp_path):
    state = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b.bias": np.ones(2)}
    np.savez(tmp_path / "w.npz", **state)
    from safetensors.numpy import save_file

    save_file(
        {k: np.asarray(v, np.float32) for k, v in state.items()}, str(tmp_path / "w.safetensors")
    )
    for name in ("w.npz", "w.safetensors"):
        got = read_state_dict(tmp_path / name)
        assert sorted(got) == ["a.weight", "b.bias"] and got["b.bias"].dtype == np.float32
        np.testing.assert_array_equal(got["a.weight"], state["a.weight"])
    with pytest.raises(ValueError, match=r"w.h5: unknown weights format '.h5'"):
        (tmp_path / "w.h5").write_bytes(b"")
        read_state_dict(tmp_path / "w.h5")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_state_dict(tmp_path / "missing.npz")


def test_read_pth_unwraps_state_dict(tmp_path):
    t = torch()
    t.save({"state_dict": {"x.weight": t.ones(2, 2), "n": t.tensor(3)}}, tmp_path / "w.pth")
    assert list(read_state_dict(tmp_path / "w.pth")) == ["x.weight"]


def test_a_file_for_another_model_is_rejected_by_name(tmp_path):
    np.savez(tmp_path / "w.npz", **{"something.else": np.zeros(3)})
    model = build_model("linear", 2)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"w.npz: no tensor matches PixelLinear; .*Conv.0"):
        load_pretrained(model, variables, tmp_path / "w.npz", log=lambda *a: None)


def test_training_starts_from_pretrained_weights(tmp_path, capsys):
    kernel = np.random.default_rng(1).normal(size=(5, 3, 1, 1)).astype(np.float32)
    np.savez(tmp_path / "w.npz", **{"Conv.0.weight": kernel, "Conv.0.bias": np.ones(5)})
    config = cli.load_experiment(
        os.path.join(ROOT, "experiments", "linear.py") + ":quick",
        "--config.total_steps=1",
        "--config.optim.lr=0.0",
        "--config.data.image_size=(16, 16)",
        "--config.data.num_val=8",
        "--config.batch_size=8",
        "--config.eval.batch_size=8",
        f"--config.model.pretrained={tmp_path / 'w.npz'}",
    )
    state = train_and_evaluate(config, str(tmp_path / "run"))["state"]
    conv = state.params["Conv_0"]
    np.testing.assert_allclose(conv["kernel"], kernel.transpose(2, 3, 1, 0))
    np.testing.assert_allclose(conv["bias"], 1.0)
    assert "loaded 2 tensors" in capsys.readouterr().out
