import logging
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from jaxseg import cli
from jaxseg.data import MEMBRANE_ROOT
from jaxseg.data.folder import FolderSource

MEMBRANE = MEMBRANE_ROOT  # shared/ beside the repository, as on CI
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMBRANE_OPTS = dict(class_names=("membrane", "cell"), value_map={0: 0, 255: 1})
THREE = ("a", "b", "c")


def _save(path, img, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, **kw)


def _rgb(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8))


def _grey_mask(h, w, k=3):
    return Image.fromarray((np.arange(h * w).reshape(h, w) % k).astype(np.uint8), "L")


def _pair(root, stem, image, mask, image_ext="png", mask_ext="png", **image_kw):
    _save(os.path.join(root, "images", f"{stem}.{image_ext}"), image, **image_kw)
    _save(os.path.join(root, "masks", f"{stem}.{mask_ext}"), mask)


def _simple(root, stems=THREE, h=8, w=6):
    for i, s in enumerate(stems):
        _pair(root, s, _rgb(h, w, i), _grey_mask(h, w))


def _src(root, split="all", **kw):
    kw.setdefault("class_names", ("x", "y", "z"))
    if split == "all":  # one split list holding every stem in images/
        stems = sorted(os.path.splitext(n)[0] for n in os.listdir(os.path.join(root, "images")))
        with open(os.path.join(root, "all.txt"), "w") as f:
            f.write("\n".join(stems) + "\n")
        kw.setdefault("split_files", {"all": "all.txt"})
    return FolderSource(str(root), split, **kw)


# --- membrane (real data) ----------------------------------------------------------------------


def test_membrane_ratio_split_is_disjoint_and_complete():
    train = FolderSource(MEMBRANE, "train", split_ratio=25 / 30, seed=1, **MEMBRANE_OPTS)
    val = FolderSource(MEMBRANE, "val", split_ratio=25 / 30, seed=1, **MEMBRANE_OPTS)
    assert (len(train), len(val)) == (25, 5)
    names_t = {train[i]["name"] for i in range(25)}
    names_v = {val[i]["name"] for i in range(5)}
    assert not names_t & names_v and names_t | names_v == {str(i) for i in range(30)}
    assert train.class_names == ("membrane", "cell")
    copy = pickle.loads(pickle.dumps(train))  # grain worker processes receive a pickled source
    np.testing.assert_array_equal(copy[3]["mask"], train[3]["mask"])
    # Deterministic per seed; another seed gives another split.
    again = FolderSource(MEMBRANE, "val", split_ratio=25 / 30, seed=1, **MEMBRANE_OPTS)
    assert [again[i]["name"] for i in range(5)] == [val[i]["name"] for i in range(5)]
    other = FolderSource(MEMBRANE, "val", split_ratio=25 / 30, seed=2, **MEMBRANE_OPTS)
    assert {other[i]["name"] for i in range(5)} != names_v
    # The caches (class weights, channel stats) are keyed by repr: it names the split's files,
    # so the replicas of config.seeds, whose seeds split differently, never share one.
    assert repr(again) == repr(val) != repr(other)
    for ex in (train[0], val[4]):
        assert ex["image"].shape == (512, 512, 3) and ex["image"].dtype == np.uint8
        assert ex["mask"].shape == (512, 512) and ex["mask"].dtype == np.uint8
        assert set(np.unique(ex["mask"]).tolist()) == {0, 1}
        with Image.open(os.path.join(MEMBRANE, "images", ex["name"] + ".png")) as stored:
            grey = np.asarray(stored)
        np.testing.assert_array_equal(ex["image"][..., 1], grey)


def test_membrane_without_value_map_names_file_and_values():
    # Without any value_map, 255 would pass as ignore_index: the loader cannot tell.
    src = FolderSource(MEMBRANE, "train", class_names=("membrane", "cell"), value_map={0: 0})
    with pytest.raises(ValueError, match=r"masks.*\.png: mask values \[255\] are not in value_map"):
        src[0]


# --- mask and image modes -----------------------------------------------------------------------


def test_modes_16bit_palette_and_colour_masks(tmp_path):
    h, w = 4, 5
    # a: 16-bit mask with 16-bit values; 16-bit grey image.
    m16 = np.array([[0, 1000, 2000, 0, 1000]] * h, np.uint16)
    img16 = np.full((h, w), 0xAB12, np.uint16)
    _pair(tmp_path, "a", Image.fromarray(img16), Image.fromarray(m16))
    # b: palette mask whose colours would turn into other numbers under convert("L");
    # RGBA image whose alpha must be dropped.
    idx = np.array([[0, 1, 2, 1, 0]] * h, np.uint8)
    pmask = Image.frombytes("P", (w, h), idx.tobytes())
    pmask.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    assert set(np.unique(np.asarray(pmask.convert("L")))) != {0, 1, 2}  # the trap
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    _pair(tmp_path, "b", Image.fromarray(idx, "L"), pmask)
    # c: RGB colour-coded mask.
    palette = ((10, 20, 30), (255, 0, 0), (0, 255, 0))
    cmask = np.array(palette, np.uint8)[idx]
    _pair(tmp_path, "c", Image.fromarray(rgba, "RGBA"), Image.fromarray(cmask, "RGB"))
    for name in ("a", "b", "c"):
        assert tmp_path.joinpath("images", name + ".png").exists()
    for name, mode in (("a", "I;16"), ("b", "P"), ("c", "RGB")):
        with Image.open(tmp_path / "masks" / f"{name}.png") as stored:
            assert stored.mode == mode

    # value_map applies to every integer mask, palette indices included.
    src = _src(tmp_path, value_map={0: 0, 1: 1, 2: 2, 1000: 1, 2000: 2}, palette=palette)
    a, b, c = (src[i] for i in range(3))
    assert [a["name"], b["name"], c["name"]] == ["a", "b", "c"]
    np.testing.assert_array_equal(a["mask"], m16 // 1000)
    np.testing.assert_array_equal(a["image"], np.full((h, w, 3), 0xAB, np.uint8))
    for ex in (a, b, c):
        assert ex["image"].dtype == np.uint8 and ex["image"].shape == (h, w, 3)
        assert ex["mask"].dtype == np.uint8 and ex["mask"].shape == (h, w)
    # P masks give the palette indices themselves.
    src_p = _src(tmp_path, palette=palette)
    np.testing.assert_array_equal(src_p[1]["mask"], idx)
    np.testing.assert_array_equal(b["image"], np.repeat(idx[..., None], 3, -1))
    np.testing.assert_array_equal(c["mask"], idx)
    np.testing.assert_array_equal(c["image"], rgba[..., :3])


def test_ignore_index_passes_and_split_lists(tmp_path):
    _simple(tmp_path, stems=("a", "b", "c", "d"))
    m = np.zeros((8, 6), np.uint8)
    m[0, 0] = 255
    _save(str(tmp_path / "masks" / "d.png"), Image.fromarray(m, "L"))
    (tmp_path / "train.txt").write_text("b\nd.png\n\n# comment\n")
    (tmp_path / "val.txt").write_text("a\nc\n")
    files = {"train": "train.txt", "val": "val.txt"}
    train = _src(tmp_path, "train", split_files=files)
    val = _src(tmp_path, "val", split_files=files)
    assert [train[i]["name"] for i in range(len(train))] == ["b", "d"]
    assert [val[i]["name"] for i in range(len(val))] == ["a", "c"]
    assert train[1]["mask"][0, 0] == 255
    with pytest.raises(ValueError, match=r"unknown split 'test'.*\['train', 'val'\]"):
        _src(tmp_path, "test", split_files=files)
    (tmp_path / "bad.txt").write_text("a\nzz\n")
    with pytest.raises(ValueError, match=r"bad.txt names 1 stems.*zz"):
        _src(tmp_path, "x", split_files={"x": "bad.txt"})
    with pytest.raises(IndexError):
        train[2]


# --- bad inputs ---------------------------------------------------------------------------------


def test_size_mismatch_names_both_files(tmp_path):
    _simple(tmp_path)
    _save(str(tmp_path / "masks" / "b.png"), _grey_mask(7, 6))
    src = _src(tmp_path)
    with pytest.raises(ValueError, match=r"images/b\.png is 6x8.*masks/b\.png is 6x7"):
        src[1]


def test_out_of_range_values(tmp_path):
    _simple(tmp_path)
    _save(str(tmp_path / "masks" / "c.png"), _grey_mask(8, 6, k=5))
    with pytest.raises(
        ValueError, match=r"masks/c\.png: mask values \[3, 4\] are outside \[0, 3\)"
    ):
        _src(tmp_path)[2]
    with pytest.raises(ValueError, match=r"masks/c\.png: mask values \[4\] are not in value_map"):
        _src(tmp_path, value_map={0: 0, 1: 1, 2: 2, 3: 255})[2]
    with pytest.raises(ValueError, match=r"masks/c\.png: mask values \[7\] are outside"):
        _src(tmp_path, value_map={0: 0, 1: 1, 2: 2, 3: 255, 4: 7})[2]


def test_unknown_colour_and_missing_palette(tmp_path):
    _pair(tmp_path, "a", _rgb(2, 3), Image.fromarray(np.full((2, 3, 3), 9, np.uint8), "RGB"))
    _pair(tmp_path, "b", _rgb(2, 3), Image.fromarray(np.full((2, 3, 3), 0, np.uint8), "RGB"))
    palette = ((0, 0, 0), (1, 1, 1), (2, 2, 2))
    src = _src(tmp_path, palette=palette)
    assert src[1]["mask"].tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(
        ValueError, match=r"masks/a\.png: 6 pixels .*not in the palette.*\(9, 9, 9\)"
    ):
        src[0]
    with pytest.raises(ValueError, match=r"masks/b\.png is an RGB colour-coded mask; pass palette"):
        _src(tmp_path)[1]


def test_corrupt_file_is_named_and_skip_bad_reports(tmp_path, caplog):
    _simple(tmp_path, stems=("a", "b", "c", "d"))
    (tmp_path / "images" / "b.png").write_bytes(b"not a png at all")
    data = (tmp_path / "images" / "c.png").read_bytes()
    (tmp_path / "images" / "c.png").write_bytes(data[: len(data) // 2])  # truncated
    src = _src(tmp_path)
    assert len(src) == 4
    with pytest.raises(ValueError, match=r"cannot read .*images/b\.png"):
        src[1]
    with pytest.raises(ValueError, match=r"cannot read .*images/c\.png"):
        src[2]
    with caplog.at_level(logging.WARNING, logger="jaxseg.data.folder"):
        src = _src(tmp_path, skip_bad=True)
    assert len(src) == 2 and [src[i]["name"] for i in range(2)] == ["a", "d"]
    assert [s for s, _ in src.skipped] == ["b", "c"]
    assert "images/b.png" in src.skipped[0][1]
    assert "skipped 2 of 4 bad examples" in caplog.text


def test_empty_folder_and_missing_directory(tmp_path):
    os.makedirs(tmp_path / "images")
    os.makedirs(tmp_path / "masks")
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"no image/mask pairs: found 0 images"):
        FolderSource(str(tmp_path), class_names=("x",))
    with pytest.raises(FileNotFoundError, match=r"masks directory not found: .*nope"):
        FolderSource(str(tmp_path), masks_dir="nope", class_names=("x",))


def test_unpaired_files_are_listed(tmp_path):
    _simple(tmp_path)
    _save(str(tmp_path / "masks" / "zz.png"), _grey_mask(8, 6))
    _save(str(tmp_path / "masks" / "yy.png"), _grey_mask(8, 6))
    with pytest.raises(
        ValueError,
        match=r"found 3 images.*5 masks.*0 images without masks.*2 masks without "
        r"images \[yy, zz\]",
    ):
        _src(tmp_path, "train")


def test_oversize_image_is_refused(tmp_path):
    _simple(tmp_path)
    _pair(tmp_path, "d", _rgb(30, 40), _grey_mask(30, 40))
    src = _src(tmp_path, max_pixels=1000)
    assert src[0]["image"].shape == (8, 6, 3)
    with pytest.raises(ValueError, match=r"images/d\.png has 40x30 = 1200 pixels.*max_pixels=1000"):
        src[3]
    assert len(_src(tmp_path, max_pixels=1000, skip_bad=True)) == 3


def test_exif_rotated_image(tmp_path):
    raw = np.random.default_rng(0).integers(0, 256, (4, 6, 3), np.uint8)  # stored 6x4 (WxH)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: 4x6 (WxH)
    _pair(tmp_path, "a", Image.fromarray(raw), _grey_mask(6, 4), exif=exif)
    ex = _src(tmp_path)[0]
    assert ex["image"].shape == (6, 4, 3)
    np.testing.assert_array_equal(ex["image"], np.rot90(raw, k=-1))
    # A mask drawn on the stored pixels cannot be paired with the rotated image.
    _save(str(tmp_path / "masks" / "a.png"), _grey_mask(4, 6))
    with pytest.raises(ValueError, match=r"EXIF orientation 6 .*matches the stored, unrotated"):
        _src(tmp_path)[0]


def test_test_split_from_a_list_beside_the_ratio_split(tmp_path):
    """data.test_list names the test stems; train and val still come from split_ratio."""
    from jaxseg import configs, recipe

    _simple(tmp_path, stems=("a", "b", "c", "d", "e"))
    (tmp_path / "test.txt").write_text("e.png\n")
    overrides = [
        "--config.data.name=folder",
        f"--config.data.root={tmp_path}",
        "--config.data.class_names=('x', 'y', 'z')",
        "--config.data.test_list=test.txt",
    ]
    config = cli.load_experiment(os.path.join(ROOT, "experiments", "unet.py"), *overrides)
    test = recipe.make_source(config, "test")
    assert [test[i]["name"] for i in range(len(test))] == ["e"]
    assert len(recipe.make_source(config, "train")) + len(recipe.make_source(config, "val")) == 5
    config = cli.load_experiment(os.path.join(ROOT, "experiments", "unet.py"), *overrides[:3])
    with pytest.raises(configs.ConfigError, match="no test split: set data.test_list"):
        recipe.make_source(config, "test")


def test_invalid_to_ignore_acts_on_folder_data(tmp_path):
    """data.invalid_to_ignore maps values that are no class to ignore_index (it raised in
    FolderSource before the pipeline's mapping could act)."""
    from jaxseg import recipe

    mask = np.array([[0, 1, 7], [2, 9, 1]], np.uint8)  # 7 and 9 are no class of three
    _pair(tmp_path, "a", _rgb(2, 3), Image.fromarray(mask, "L"))
    (tmp_path / "all.txt").write_text("a\n")
    overrides = [
        "--config.data.name=folder",
        f"--config.data.root={tmp_path}",
        "--config.data.class_names=('x', 'y', 'z')",
        "--config.data.train_list=all.txt",
        "--config.data.val_list=all.txt",
    ]
    unet = os.path.join(ROOT, "experiments", "unet.py")
    strict = recipe.make_source(cli.load_experiment(unet, *overrides), "train")
    with pytest.raises(ValueError, match=r"mask values \[7, 9\]"):
        strict[0]
    lenient = cli.load_experiment(unet, *overrides, "--config.data.invalid_to_ignore=True")
    got = recipe.make_source(lenient, "train")[0]["mask"]
    np.testing.assert_array_equal(got, [[0, 1, 255], [2, 255, 1]])


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpeg_decode_equals_pillow(tmp_path, mode):
    # jaxseg.data.images decodes baseline JPEGs with simplejpeg: the same libjpeg-turbo
    # defaults as Pillow, so the very same pixels (4:2:0 chroma upsampled the same way).
    yy, xx = np.mgrid[0:37, 0:53]
    rgb = np.stack([xx * 4, yy * 6, (xx * yy) % 256], -1).astype(np.uint8)
    noise = np.random.default_rng(1).integers(0, 40, rgb.shape, np.uint8)
    img = Image.fromarray(rgb + noise).convert(mode)
    _pair(tmp_path, "a", img, _grey_mask(37, 53), image_ext="jpg", quality=85)
    got = _src(tmp_path)[0]["image"]
    with Image.open(tmp_path / "images" / "a.jpg") as ref:
        want = np.asarray(ref.convert("RGB"))
    assert got.shape == (37, 53, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    if mode == "L":  # greyscale stays one channel in memory (images.as_rgb)
        assert got.strides[-1] == 0


def test_jpeg_corrupt_and_exif_rotated(tmp_path):
    raw = np.random.default_rng(0).integers(0, 256, (16, 24, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 8  # shown rotated 90 degrees counter-clockwise: 16x24 (WxH)
    _pair(tmp_path, "a", Image.fromarray(raw), _grey_mask(24, 16), image_ext="jpg", exif=exif)
    _pair(tmp_path, "b", Image.fromarray(raw), _grey_mask(16, 24), image_ext="jpg")
    data = (tmp_path / "images" / "b.jpg").read_bytes()
    (tmp_path / "images" / "b.jpg").write_bytes(data[:200] + b"\x00" * 50)  # header kept
    src = _src(tmp_path)
    with Image.open(tmp_path / "images" / "a.jpg") as ref:
        want = np.rot90(np.asarray(ref), k=1)
    np.testing.assert_array_equal(src[0]["image"], want)
    with pytest.raises(ValueError, match=r"cannot read .*images/b\.jpg"):
        src[1]
