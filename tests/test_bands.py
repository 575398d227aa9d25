"""Images that are not 8-bit RGB (issue 23): 1 to N bands at 8 or 16 bits read from TIFF
(tifffile) and Pillow formats, per-channel mean/std computed once and cached, every model
at 4 channels, a 3-channel pretrained stem adapted by timm's rule, RGB-only augmentation
refused, and a folder of 4-band 16-bit TIFFs training through the command line."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tifffile
from PIL import Image

from jaxseg import augment, configs, evaluate, train
from jaxseg.channel_stats import channel_stats
from jaxseg.data import images, transforms
from jaxseg.data.augment_spec import AugmentSpec
from jaxseg.data.folder import FolderSource
from jaxseg.inference import normalize
from jaxseg.models import MODELS, build_model
from jaxseg.models.pretrained import (
    adapt_input_conv,
    load_pretrained,
    torch_key,
    transposed_kernels,
)
from jaxseg.segmenter import Segmenter
from tests.test_models import FORWARD_SIZE, FORWARD_SIZES, OPTIONS
from tests.torch_support import torch, torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET = os.path.join(ROOT, "experiments", "unet.py") + ":quick"


def _bands(seed, shape=(12, 10, 4)):
    return np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)


# ------------------------------------------------------------------------------ reading


def test_tiff_layouts_read_as_stored(tmp_path):
    """Pixel-interleaved, band-interleaved (planar) and one page a band give the array
    written, bands last; 8-bit stays 8-bit."""
    a = _bands(0)
    tifffile.imwrite(tmp_path / "contig.tif", a, photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(
        tmp_path / "planar.tif",
        np.moveaxis(a, -1, 0),
        photometric="minisblack",
        planarconfig="separate",
    )
    tifffile.imwrite(tmp_path / "pages.tif", np.moveaxis(a, -1, 0), photometric="minisblack")
    for name in ("contig", "planar", "pages"):
        got = images.read_bands(str(tmp_path / f"{name}.tif"), 10**6, 4)
        assert got.dtype == np.uint16, name
        np.testing.assert_array_equal(got, a, err_msg=name)
    tifffile.imwrite(tmp_path / "grey8.tif", a[..., 0].astype(np.uint8))
    got = images.read_bands(str(tmp_path / "grey8.tif"), 10**6, 1)
    assert got.dtype == np.uint8 and got.shape == (12, 10, 1)


def test_tiff_orientation_as_pillow_turns_it(tmp_path):
    """The TIFF Orientation tag turns the bands as Pillow's reader (read_rgb: decode, then
    exif_transpose) turns the same file."""
    a = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    for turn in range(1, 9):
        path = str(tmp_path / f"o{turn}.tif")
        tifffile.imwrite(path, a, extratags=[(274, 3, 1, turn, True)])
        expected = images.read_rgb(path, 10**6)[..., 0]
        got, orientation = images.read_bands_upright(path, 10**6, 1)
        assert orientation == turn
        np.testing.assert_array_equal(got[..., 0], expected, err_msg=f"orientation {turn}")


def test_pillow_formats_keep_their_depth(tmp_path):
    grey16 = _bands(1, (6, 5))
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    got = images.read_bands(str(tmp_path / "g16.png"), 10**6, 1)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got[..., 0], grey16)
    rgba = np.random.default_rng(2).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgbn.png")
    np.testing.assert_array_equal(images.read_bands(str(tmp_path / "rgbn.png"), 10**6, 4), rgba)


def test_band_refusals_are_one_line_naming_the_file(tmp_path):
    path = str(tmp_path / "a.tif")
    tifffile.imwrite(path, _bands(0), photometric="minisblack", planarconfig="contig")
    floats = str(tmp_path / "f.tif")
    tifffile.imwrite(floats, np.zeros((4, 4, 4), np.float32), photometric="minisblack")
    junk = str(tmp_path / "junk.tif")
    with open(junk, "wb") as f:
        f.write(b"II*\x00not a tiff at all")
    cases = [
        ((path, 10**6, 3), f"{path} has 4 bands, data.channels=3"),
        ((path, 100, 4), f"{path} has 10x12 = 120 pixels, above max_pixels=100"),
        ((floats, 10**6, 4), f"{floats}: TIFF samples of type float32 are not supported"),
        ((junk, 10**6, 4), f"cannot read {junk}: not a readable TIFF"),
    ]
    for args, says in cases:
        with pytest.raises(images.ImageError) as e:
            images.read_bands(*args)
        assert str(e.value).startswith(says) and "\n" not in str(e.value), str(e.value)


def _tree(root, count=6, size=(20, 24), channels=4):
    """root/images/*.tif (u16, `channels` bands), root/masks/*.png (0/1)."""
    os.makedirs(root / "images"), os.makedirs(root / "masks")
    rng = np.random.default_rng(0)
    stacks = []
    for i in range(count):
        image = rng.integers(0, 65536, (*size, channels), dtype=np.uint16)
        tifffile.imwrite(
            root / "images" / f"{i}.tif", image, photometric="minisblack", planarconfig="contig"
        )
        mask = (image[..., 0] > 32768).astype(np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
        stacks.append(image)
    return stacks


def test_folder_source_reads_bands(tmp_path):
    stacks = _tree(tmp_path)
    source = FolderSource(
        str(tmp_path), "train", class_names=("a", "b"), split_ratio=1.0, channels=4
    )
    example = source[0]
    assert example["image"].dtype == np.uint16 and example["image"].shape == (20, 24, 4)
    np.testing.assert_array_equal(example["image"], stacks[int(example["name"])])
    assert repr(source).endswith("channels=4)")
    assert "channels" not in repr(FolderSource(str(tmp_path), "train", class_names=("a", "b")))


# ------------------------------------------------------------------ 16 bits on both paths


def test_host_and_device_augmentation_keep_16_bits():
    """A flat u16 image stays exactly its value through rescale, crop, flips, elastic and
    blur (a clip at 255 or a cast to u8 would not), on the host and in the train step."""
    image = np.full((20, 24, 4), 40000, np.uint16)
    mask = np.zeros((20, 24), np.uint8)
    spec = AugmentSpec(crop_size=(16, 16), scale_range=(0.9, 1.3), elastic_sigma=2.0, blur_prob=1.0)
    out, _ = transforms.train_transform(image, mask, np.random.default_rng(0), spec)
    assert out.dtype == np.uint16 and out.shape == (16, 16, 4)
    np.testing.assert_array_equal(out, 40000)  # rescaled to 18x21 or more: no padding
    batch = {
        "image": jnp.asarray(image[None]),
        "mask": jnp.asarray(mask[None]),
        "size": jnp.asarray([[20, 24]], jnp.int32),
    }
    on_device = jax.jit(augment.augment_batch, static_argnums=2)(jax.random.key(0), batch, spec)
    assert on_device["image"].dtype == jnp.uint16
    np.testing.assert_array_equal(np.asarray(on_device["image"]), 40000)


def test_normalize_scales_16_bits_by_65535():
    x = jnp.asarray([[0, 65535, 13107]], jnp.uint16)  # 13107 / 65535 = 0.2
    got = normalize(x, (0.5, 0.5, 0.2), (0.25, 0.5, 0.1))
    np.testing.assert_allclose(np.asarray(got), [[-2.0, 1.0, 0.0]], atol=1e-6)
    u8 = normalize(jnp.asarray([[51]], jnp.uint8), (0.1,), (0.5,))  # 51 / 255 = 0.2
    np.testing.assert_allclose(np.asarray(u8), [[0.2]], atol=1e-6)


# ------------------------------------------------------------------ mean/std, cached


class _Images:
    def __init__(self, arrays, name="fake"):
        self.arrays, self.name = arrays, name

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        return {"image": self.arrays[i], "mask": np.zeros(self.arrays[i].shape[:2])}

    def __repr__(self):
        return f"_Images({self.name})"


def test_channel_stats_against_numpy_and_cached(tmp_path):
    arrays = [_bands(3, (5, 7, 4)), _bands(4, (9, 3, 4))]
    pixels = np.concatenate([a.reshape(-1, 4) for a in arrays]).astype(np.float64) / 65535
    mean, std = channel_stats(_Images(arrays), 4, workdir=str(tmp_path), progress=False)
    np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(0), rtol=1e-9)
    cached = json.loads((tmp_path / "channel_stats.json").read_text())
    assert cached["dtype"] == "uint16" and cached["pixels"] == 5 * 7 + 9 * 3

    class Unread(_Images):
        def __getitem__(self, i):
            raise AssertionError("the cache should have answered")

    again = channel_stats(Unread(arrays), 4, workdir=str(tmp_path), progress=False)
    assert again == (mean, std)
    other = [a // 257 for a in arrays]  # another source (repr): counted again, u16 still
    assert channel_stats(_Images(other, "b"), 4, workdir=str(tmp_path), progress=False) != again
    mixed = _Images([arrays[0], arrays[1].astype(np.uint8)], "mixed")
    with pytest.raises(ValueError, match="a uint8 image among uint16 ones"):
        channel_stats(mixed, 4, workdir=None, progress=False)


# --------------------------------------------------------------------- models, pretrained


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_takes_4_channels(name):
    """Shapes only (jax.eval_shape): logits at input size, and a 4-channel input conv."""
    size = FORWARD_SIZES.get(name, FORWARD_SIZE)
    model = build_model(name, 2, **OPTIONS.get(name, {}))
    x = jax.ShapeDtypeStruct((1, *size, 4), jnp.float32)
    (logits, _), variables = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x, train=False), x
    )
    assert logits.shape == (1, *size, 2)
    kernels = [v.shape for v in jax.tree.leaves(variables["params"]) if len(v.shape) == 4]
    assert any(k[2] == 4 for k in kernels), kernels[:3]


@pytest.mark.parametrize("channels", [1, 2, 4, 13])
def test_adapt_input_conv_matches_timm(channels):
    t = torch()
    torchvision()  # timm imports torchvision: stub its compiled ops
    timm_models = pytest.importorskip("timm.models")
    weight = np.random.default_rng(channels).standard_normal((8, 3, 3, 3)).astype(np.float32)
    expected = timm_models.adapt_input_conv(channels, t.from_numpy(weight.copy())).numpy()
    got = adapt_input_conv(weight.transpose(2, 3, 1, 0), channels)  # flax: kh,kw,I,O
    np.testing.assert_array_equal(got.transpose(3, 2, 0, 1), expected)


def test_pretrained_rgb_stem_loads_into_4_channels(tmp_path):
    """A 3-channel model's weights, saved as a state dict, load into the 4-channel model:
    the stem by timm's rule (said in one line), everything else as stored."""
    t = torch()
    torchvision()
    timm_models = pytest.importorskip("timm.models")
    model = build_model("encoder_decoder", 2, base_width=4)

    rng = np.random.default_rng(0)

    def init(x):  # random values of init's shapes: no init compiled or run
        shapes = jax.eval_shape(lambda x: model.init(jax.random.key(1), x, train=False), x)
        return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)

    rgb = init(jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32))
    transposed = transposed_kernels(model, (16, 16, 3))  # written in conv layout: skipped
    state = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(rgb)[0]:
        names = tuple(str(p.key) for p in path)
        value = np.asarray(leaf)
        if names not in transposed:
            state[torch_key(names)] = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value
    file = tmp_path / "rgb.npz"
    np.savez(file, **state)
    four = init(jax.ShapeDtypeStruct((1, 16, 16, 4), jnp.float32))
    lines = []
    out = load_pretrained(model, four, file, lines.append, image_shape=(16, 16, 4))
    adapted = [line for line in lines if "adapted" in line]
    assert len(adapted) == 1 and "from 3 to 4 channels" in adapted[0], lines
    stem = [
        k for k in state if k.endswith("weight") and state[k].ndim == 4 and state[k].shape[1] == 3
    ]
    assert len(stem) == 1 and stem[0] in adapted[0]
    expected = timm_models.adapt_input_conv(4, t.from_numpy(state[stem[0]].copy())).numpy()
    flat = {
        torch_key(tuple(str(p.key) for p in path)): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(out)[0]
    }
    np.testing.assert_array_equal(flat[stem[0]].transpose(3, 2, 0, 1), expected)
    for key, value in state.items():
        if key != stem[0]:
            loaded = flat[key].transpose(3, 2, 0, 1) if flat[key].ndim == 4 else flat[key]
            np.testing.assert_array_equal(loaded, value, err_msg=key)


# ------------------------------------------------------------------ the command line


def _main_error(capsys, tmp_path, *args):
    workdir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--config", UNET, *args, f"--workdir={workdir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert not workdir.exists()
    return err[0]


def test_rgb_only_settings_refused_in_one_line(tmp_path, capsys):
    folder = [
        "--config.data.name=folder",
        f"--config.data.root={tmp_path}",
        "--config.data.class_names=('a', 'b')",
    ]
    cases = [
        (
            [*folder, "--config.data.channels=4", "--config.augment.photometric=True"],
            "augment.photometric changes hue and saturation, which need RGB; with "
            "data.channels=4 set augment.photometric=False",
        ),
        (
            ["--config.data.channels=4"],
            "data.name='shapes' reads RGB images only; data.channels=4 needs a dataset that "
            "takes channels, such as folder",
        ),
        (
            [*folder, "--config.data.channels=4", "--config.data.mean=(0.5, 0.5)"],
            "data.mean has 2 values for data.channels=4",
        ),
        (
            [*folder, "--config.data.channels=2", "--config.eval.crf.enabled=True"],
            "eval.crf's colour kernel is in 0..255 RGB units",
        ),
        ([*folder, "--config.data.channels=0"], "data.channels=0 needs 1 or more"),
    ]
    for args, says in cases:
        line = _main_error(capsys, tmp_path, *args)
        assert says in line, (says, line)


def test_folder_of_4_band_16_bit_tiffs_trains(tmp_path):
    """Issue 23's check: two steps with --config.data.channels=4; the mean/std are computed
    from the train split (numpy over the same files), saved in config.json and cached."""
    root = tmp_path / "data"
    stacks = _tree(root, count=10)
    workdir = tmp_path / "run"
    train.main(
        [
            "--config", UNET,
            "--config.data.name=folder",
            f"--config.data.root={root}",
            "--config.data.class_names=('a', 'b')",
            "--config.data.channels=4",
            "--config.data.image_size=(16, 16)",
            "--config.eval.size=(24, 24)",
            "--config.batch_size=8",
            "--config.eval.batch_size=8",
            "--config.model.name=linear",  # the data path is under test: the cheapest compile
            "--config.log_every=1",
            "--config.eval_every=2",
            "--config.checkpoint_every=2",
            "--config.total_steps=2",
            f"--workdir={workdir}",
        ]
    )  # fmt: skip
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any("val/miou" in r for r in records)
    config = json.loads((workdir / "config.json").read_text())
    train_stems = FolderSource(str(root), "train", class_names=("a", "b"))
    pixels = (
        np.concatenate([stacks[int(s)].reshape(-1, 4) for s, _, _ in train_stems._pairs]).astype(
            np.float64
        )
        / 65535
    )
    np.testing.assert_allclose(config["data"]["mean"], pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(config["data"]["std"], pixels.std(0), rtol=1e-9)
    assert (workdir / "channel_stats.json").exists()
    # evaluate scores the run on its dataset; what takes RGB files refuses it in one line
    report = evaluate.main([f"--workdir={workdir}"])
    in_run = [r["val/miou"] for r in records if "val/miou" in r][-1]
    assert report["checkpoint_step"] == 2 and report["scores"]["miou"] == in_run
    with pytest.raises(configs.ConfigError, match="4-channel images; Segmenter, predict"):
        Segmenter.from_workdir(str(workdir))
