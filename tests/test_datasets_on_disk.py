"""The readers of the providers' layouts on tiny trees written in those layouts, with their
real file names and encodings (tests/dataset_trees.py: palette PNGs, JPEG, TIFF, GIF, SBD's
.mat): class names against the official lists, the label mapping pixel by pixel against
hand-mapped values, splits and counts, one-line errors, and training through the CLI."""

import json
import os
import shutil

import numpy as np
import pytest
import scipy.io
from PIL import Image

from jaxseg.data import ade20k, camvid, cityscapes, coco_stuff, drive, make_source, tfds_source, voc
from jaxseg.data.folder import BadExampleError
from tests import dataset_trees as trees
from tests.dataset_trees import stripes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET = os.path.join(ROOT, "experiments", "unet.py") + ":quick"

# What each stored value must become, mapped by hand from the official tables (Cityscapes'
# labels.py trainIds, ADE20K's 1..150 -> 0..149, MMSegmentation's COCO-Stuff clsID_to_trID,
# SegNet's void 11, DRIVE's white vessels).
EXPECTED = {
    "cityscapes": (0, 13, 255, 11, 18, 1),  # road, car, ignored, person, bicycle, sidewalk
    "voc": (0, 15, 255, 7, 20),
    "sbd": (0, 15, 7, 20, 1),
    "ade20k": (255, 0, 149, 12, 2),
    "coco_stuff": (0, 11, 255, 170, 80),  # 12 -> 11 and 181 -> 170 skip unused ids
    "camvid": (0, 3, 255, 8, 10),
    "drive": (0, 1, 0, 1),
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    out = tmp_path_factory.mktemp("trees")
    return trees.build_all(str(out)) | {"sbd": str(out / "voc" / "benchmark_RELEASE")}


def _masks_are(source, key):
    for i in range(len(source)):
        mask = source[i]["mask"]
        expected = stripes(EXPECTED[key], *mask.shape)
        np.testing.assert_array_equal(mask, expected, err_msg=source[i]["name"])


def test_class_names_and_palettes_are_the_official_ones():
    assert len(cityscapes.CLASS_NAMES) == 19 and len(cityscapes.PALETTE) == 19
    assert (cityscapes.CLASS_NAMES[0], cityscapes.CLASS_NAMES[13]) == ("road", "car")
    assert cityscapes.PALETTE[13] == (0, 0, 142) and cityscapes.PALETTE[0] == (128, 64, 128)
    assert len(voc.CLASS_NAMES) == 21 and voc.CLASS_NAMES[15] == "person"
    # VOCdevkit's colour map: aeroplane, person, tvmonitor.
    assert voc.PALETTE[1] == (128, 0, 0) and voc.PALETTE[15] == (192, 128, 128)
    assert voc.PALETTE[20] == (0, 64, 128) and voc.colormap()[255] == (224, 224, 192)
    assert len(ade20k.CLASS_NAMES) == 150 and len(ade20k.PALETTE) == 150
    assert ade20k.CLASS_NAMES[:3] == ("wall", "building", "sky")
    assert (ade20k.CLASS_NAMES[12], ade20k.CLASS_NAMES[149]) == ("person", "flag")
    assert ade20k.PALETTE[0] == (120, 120, 120) and ade20k.PALETTE[149] == (92, 0, 255)
    assert len(set(ade20k.CLASS_NAMES)) == 150
    assert len(coco_stuff.CLASS_NAMES) == 171 and len(coco_stuff.PALETTE) == 171
    assert coco_stuff.CLASS_NAMES[0] == "person" and coco_stuff.CLASS_NAMES[80] == "banner"
    assert coco_stuff.CLASS_NAMES[170] == "wood"
    assert camvid.CLASS_NAMES[0] == "Sky" and len(camvid.CLASS_NAMES) == 11
    assert camvid.PALETTE[4] == (60, 40, 222)
    assert drive.CLASS_NAMES == ("background", "vessel")
    preset = tfds_source.PRESETS["scene_parse150"]
    assert preset["class_names"] == ade20k.CLASS_NAMES
    assert preset["value_map"][0] == 255 and preset["value_map"][150] == 149


def test_cityscapes_label_ids_to_train_ids_splits_and_images(roots):
    root = roots["cityscapes"]
    train = make_source("cityscapes", "train", root=root)
    assert len(train) == trees.TRAIN and train.class_names == cityscapes.CLASS_NAMES
    assert len(make_source("cityscapes", "val", root=root)) == 2
    test = make_source("cityscapes", "test", root=root)
    assert len(test) == 1 and (test[0]["mask"] == 255).all()
    _masks_are(train, "cityscapes")
    mask = train[0]["mask"]
    assert mask[0, 10] == 0 and mask[0, 11] == 13  # label id 7 -> road, 26 -> car
    assert train[0]["name"] == "aachen_000000_000019"
    stored = Image.open(f"{root}/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png")
    np.testing.assert_array_equal(train[0]["image"], np.asarray(stored))
    assert train.palette == cityscapes.PALETTE


def test_cityscapes_and_coco_stuff_read_train_id_files_when_every_mask_has_one(roots, tmp_path):
    city = shutil.copytree(roots["cityscapes"], tmp_path / "city")
    for path in sorted((city / "gtFine" / "val").rglob("*_labelIds.png")):
        name = str(path).replace("_labelIds.png", "_labelTrainIds.png")
        Image.fromarray(stripes((5, 255, 18), 32, 64)).save(name)
    val = make_source("cityscapes", "val", root=str(city))
    np.testing.assert_array_equal(val[0]["mask"], stripes((5, 255, 18), 32, 64))
    coco = shutil.copytree(roots["coco_stuff"], tmp_path / "coco")
    for path in sorted((coco / "annotations" / "val2017").glob("*.png")):
        Image.fromarray(stripes((3, 170, 255), 48, 64)).save(str(path)[:-4] + "_labelTrainIds.png")
    val = make_source("coco_stuff", "val", root=str(coco))
    assert len(val) == 2
    np.testing.assert_array_equal(val[1]["mask"], stripes((3, 170, 255), 48, 64))


def test_voc_palette_pngs_with_borders_from_voc2012_or_vocdevkit(roots):
    devkit = os.path.dirname(roots["voc"])
    for root in (roots["voc"], devkit):
        train = make_source("voc", "train", root=root)
        assert len(train) == trees.TRAIN and len(make_source("voc", "val", root=root)) == 2
        _masks_are(train, "voc")
    assert train[0]["mask"][0, 0] == 0 and train[0]["mask"][0, 20] == 255  # border stays 255
    with pytest.raises(ValueError, match="no public test split"):
        make_source("voc", "test", root=devkit)


def test_voc_aug_train_aug_from_segmentation_class_aug_or_sbd_mat(roots, tmp_path):
    for options in ({}, {"sbd_root": roots["sbd"]}):
        train = make_source("voc_aug", "train", root=roots["voc"], **options)
        # VOC train + SBD train and val - VOC val: 16 + 2008_000001..3 (2007_000033 is val).
        names = [train[i]["name"] for i in range(len(train))]
        assert len(train) == trees.TRAIN + 3, options
        assert names[-3:] == ["2008_000001", "2008_000002", "2008_000003"]
        for i, name in enumerate(names):  # VOC's own masks for VOC train, SBD's for the rest
            key = "sbd" if name.startswith("2008") else "voc"
            expected = stripes(EXPECTED[key], *train[i]["mask"].shape)
            np.testing.assert_array_equal(train[i]["mask"], expected, err_msg=name)
        assert len(make_source("voc_aug", "val", root=roots["voc"], **options)) == 2
    lists = os.path.join(roots["voc"], "ImageSets", "Segmentation", "trainaug.txt")
    with open(lists, "w") as f:
        f.write("2007_000100\n2008_000002\n")
    try:
        assert len(make_source("voc_aug", "train", root=roots["voc"])) == 2
    finally:
        os.remove(lists)
    bad = tmp_path / "dataset" / "cls"
    bad.mkdir(parents=True)
    (bad / "2008_000001.mat").write_bytes(b"not a mat file")
    scipy.io.savemat(bad / "2008_000002.mat", {"other": np.zeros((2, 2))})
    source = make_source("voc_aug", "train", root=roots["voc"], sbd_root=str(tmp_path))
    for name in ("2008_000001", "2008_000002"):
        index = [source._pairs[i][0] for i in range(len(source))].index(name)
        with pytest.raises(BadExampleError, match=f"{bad / name}.mat"):
            source[index]


def test_ade20k_zero_ignored_and_classes_shifted(roots, tmp_path):
    train = make_source("ade20k", "train", root=roots["ade20k"])
    assert (
        len(train) == trees.TRAIN and len(make_source("ade20k", "val", root=roots["ade20k"])) == 2
    )
    _masks_are(train, "ade20k")
    assert train[0]["mask"][0, 0] == 255 and train[0]["mask"][0, 13] == 0  # 0 -> 255, 1 -> 0
    # A value that is no ADE20K class is refused naming the file, or ignored by option.
    ade = shutil.copytree(roots["ade20k"], tmp_path / "ade")
    path = ade / "annotations" / "validation" / "ADE_val_00000001.png"
    Image.fromarray(stripes((1, 151), 48, 64)).save(path)
    with pytest.raises(BadExampleError, match=f"{path}: mask values \\[151\\]"):
        make_source("ade20k", "val", root=str(ade))[0]
    lenient = make_source("ade20k", "val", root=str(ade), invalid_to_ignore=True)
    np.testing.assert_array_equal(lenient[0]["mask"], stripes((0, 255), 48, 64))


def test_coco_stuff_camvid_and_drive(roots):
    coco = make_source("coco_stuff", "train", root=roots["coco_stuff"])
    assert len(coco) == trees.TRAIN and coco.class_names == coco_stuff.CLASS_NAMES
    _masks_are(coco, "coco_stuff")
    for split, count in (("train", trees.TRAIN), ("val", 2), ("test", 2)):
        source = make_source("camvid", split, root=roots["camvid"])
        assert len(source) == count
        _masks_are(source, "camvid")
    for split, count in (("train", trees.TRAIN), ("val", 2), ("test", 2)):
        source = make_source("drive", split, root=roots["drive"])
        assert len(source) == count
        _masks_are(source, "drive")  # index-1-white palette GIFs and greyscale GIFs alike
    assert make_source("drive", "val", root=roots["drive"])[0]["name"] == "01_test"
    fov = make_source("drive", "train", root=roots["drive"], fov_ignore=True)[0]["mask"]
    expected = stripes(EXPECTED["drive"], 40, 38)
    expected[:, :8] = 255  # outside the field of view (black in mask/21_training_mask.gif)
    np.testing.assert_array_equal(fov, expected)


def test_wrong_root_empty_split_and_missing_files_are_one_line(roots, tmp_path):
    nowhere = tmp_path / "nowhere"
    for name, expected in (
        ("cityscapes", "leftImg8bit/<split>/<city>/<name>_leftImg8bit.png"),
        ("voc", "ROOT/JPEGImages/*.jpg"),
        ("voc_aug", "ROOT/JPEGImages/*.jpg"),
        ("ade20k", "ROOT/images/{training,validation}/*.jpg"),
        ("coco_stuff", "ROOT/images/{train2017,val2017}/*.jpg"),
        ("camvid", "ROOT/{train,val,test}annot/*.png"),
        ("drive", "ROOT/{training,test}/images/*.tif"),
    ):
        with pytest.raises(FileNotFoundError) as error:
            make_source(name, "train", root=str(nowhere))
        message = str(error.value)
        assert "\n" not in message and str(nowhere) in message and expected in message, message
        with pytest.raises(ValueError, match=f"{name}: data.root is empty"):
            make_source(name, "train")
    empty = tmp_path / "city"
    (empty / "leftImg8bit" / "val" / "aachen").mkdir(parents=True)
    (empty / "gtFine" / "val").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=f"no {empty}/leftImg8bit/val/\\*/\\*_leftImg8bit"):
        make_source("cityscapes", "val", root=str(empty))
    camvid_copy = shutil.copytree(roots["camvid"], tmp_path / "camvid")
    os.remove(camvid_copy / "valannot" / "0016E5_07961.png")
    with pytest.raises(FileNotFoundError, match="1 files missing: .*valannot/0016E5_07961.png"):
        make_source("camvid", "val", root=str(camvid_copy))


def test_wrong_root_through_the_train_command_exits_2(tmp_path, capsys):
    from jaxseg import train

    workdir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train.main(
            ["--config", UNET, "--config.data.name=cityscapes"]
            + [f"--config.data.root={tmp_path / 'nope'}", f"--workdir={workdir}"]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert f"{tmp_path / 'nope'}/leftImg8bit/train is not a folder; expected" in err[0]
    assert not workdir.exists()


# Each tree's largest image (tests/dataset_trees.py), the evaluation canvas.
EVAL_SIZE = {
    "cityscapes": (32, 64),
    "voc": (40, 48),
    "ade20k": (48, 64),
    "coco_stuff": (48, 64),
    "camvid": (36, 48),
    "drive": (40, 38),
}


def _train_two_steps(name, root, workdir):
    from jaxseg import train

    train.main(
        [
            "--config",
            UNET,
            f"--config.data.name={name}",
            f"--config.data.root={root}",
            "--config.total_steps=2",
            "--config.batch_size=8",
            "--config.eval.batch_size=8",
            "--config.model.base_width=4",
            "--config.model.depth=2",
            "--config.data.image_size=(32, 32)",
            f"--config.eval.size={EVAL_SIZE[name]}",
            "--config.loader.num_workers=0",
            f"--workdir={workdir}",
        ]
    )
    with open(workdir / "dataset.json") as f:
        labels = json.load(f)
    with open(workdir / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert np.isfinite(rows[0]["train/loss"]) and 0 <= rows[-1]["val/miou"] <= 1
    return labels


def test_cityscapes_trains_two_steps_through_the_command_line(roots, tmp_path):
    labels = _train_two_steps("cityscapes", roots["cityscapes"], tmp_path / "run")
    assert labels["class_names"] == list(cityscapes.CLASS_NAMES)
    assert labels["palette"][13] == [0, 0, 142]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, module",
    [("voc", voc), ("ade20k", ade20k), ("coco_stuff", coco_stuff), ("camvid", camvid),
     ("drive", drive)],
)  # fmt: skip
def test_each_dataset_trains_two_steps_through_the_command_line(roots, tmp_path, name, module):
    labels = _train_two_steps(name, roots[name], tmp_path / "run")
    assert labels["class_names"] == list(module.CLASS_NAMES)
