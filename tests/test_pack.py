"""jaxseg.pack and the packed dataset: every example as the source gave it, bit for bit,
so training on the packed copy logs the very losses of training on the source.

The reference is always the source the copy was packed from (FolderSource reading the
files, the shapes renderer), compared array by array here, not with the module's own
comparison."""

import json
import os

import numpy as np
import pytest
import test_remote_workdir
from PIL import Image

from jaxseg import cli, pack, train
from jaxseg.data import make_source, packed
from jaxseg.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET = os.path.join(ROOT, "experiments", "unet.py")
MEMBRANE = os.path.join(ROOT, "experiments", "unet_membrane.py")
CLASSES = "--config.data.class_names=('bg', 'one', 'two')"
BUCKET = test_remote_workdir.BUCKET
bucket = test_remote_workdir.bucket  # the fixture that routes gs://BUCKET to a folder


def assert_same(a: dict, b: dict):
    """Equal bit for bit: keys, dtypes, shapes, values, and greyscale views stay views."""
    assert a.keys() == b.keys()
    for key, x in a.items():
        if isinstance(x, np.ndarray):
            assert (b[key].dtype, b[key].shape) == (x.dtype, x.shape), key
            np.testing.assert_array_equal(b[key], x, err_msg=key)
            assert (b[key].strides[-1] == 0) == (x.strides[-1] == 0), key
        else:
            assert b[key] == x and type(b[key]) is type(x), key


def _folder(root, count=6):
    """A folder dataset of the kinds a user has: RGB and greyscale JPEGs, an EXIF-rotated
    JPEG, a palette PNG, a greyscale PNG; masks 0..2 with 255 borders."""
    rng = np.random.default_rng(0)
    os.makedirs(root / "images"), os.makedirs(root / "masks")
    for i in range(count):
        h, w = 40 + 4 * i, 48
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        kind = i % 5
        mask_hw = (h, w)
        if kind == 0:
            Image.fromarray(rgb).save(root / "images" / f"{i}.jpg", quality=90)
        elif kind == 1:
            Image.fromarray(rgb[..., 0]).save(root / "images" / f"{i}.jpg", quality=90)
        elif kind == 2:  # shown turned 90 degrees: the mask has the shown size
            exif = Image.Exif()
            exif[0x0112] = 6
            Image.fromarray(rgb).save(root / "images" / f"{i}.jpg", exif=exif)
            mask_hw = (w, h)
        elif kind == 3:
            Image.fromarray(rgb).convert("P").save(root / "images" / f"{i}.png")
        else:
            Image.fromarray(rgb[..., 1]).save(root / "images" / f"{i}.png")
        mask = rng.integers(0, 3, mask_hw).astype(np.uint8)
        mask[0] = 255
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


def test_membrane_packs_bit_for_bit(tmp_path):
    meta = pack.main(["--config", MEMBRANE, "--out", str(tmp_path / "p"), "--shard_size=10"])
    assert meta["class_names"] == ["membrane", "cell"]
    assert {s: (i["count"], len(i["shards"])) for s, i in meta["splits"].items()} == {
        "train": (25, 3),  # 25 = 10 + 10 + 5
        "val": (5, 1),
    }
    assert meta["splits"]["train"]["stored"] == 25  # the PNG files' bytes, as stored
    for split in ("train", "val"):
        source = make_source("membrane", split)
        copy = make_source("packed", split, root=str(tmp_path / "p"))
        assert len(copy) == len(source) and copy.class_names == ("membrane", "cell")
        for i in range(len(source)):
            assert_same(source[i], copy[i])


def test_folder_kinds_and_computed_sources_pack_bit_for_bit(tmp_path):
    folder = ["--config.data.name=folder", f"--config.data.root={_folder(tmp_path / 'f', 10)}"]
    meta = pack.pack(
        cli.load_experiment(UNET, *folder, CLASSES), str(tmp_path / "p"), threads=2, progress=False
    )
    assert sum(meta["splits"][s]["stored"] for s in ("train", "val")) == 10
    for split in ("train", "val"):  # 8 and 2 of the seeded ratio split
        source = make_source("folder", split, root=str(tmp_path / "f"), class_names=("a", "b", "c"))
        copy = make_source("packed", split, root=str(tmp_path / "p"))
        assert len(copy) == len(source) == {"train": 8, "val": 2}[split]
        for i in range(len(source)):
            assert_same(source[i], copy[i])
    # A computed source: shapes scenes (images and masks made in memory) as lossless PNGs.
    tiny = [
        "--config.data.num_train=3",
        "--config.data.num_val=2",
        "--config.data.image_size=(24, 40)",
    ]
    config = cli.load_experiment(UNET, *tiny)
    meta = pack.pack(config, str(tmp_path / "s"), progress=False)
    assert {s: i["encoded"] for s, i in meta["splits"].items()} == {"train": 3, "val": 2, "test": 2}
    for split in ("train", "val", "test"):
        source = make_source("shapes", split, num_train=3, num_val=2, image_size=(24, 40))
        copy = make_source("packed", split, root=str(tmp_path / "s"))
        for i in range(len(source)):
            assert_same(source[i], copy[i])


class _Flipped:
    """A source whose image_file bytes are not its example (it flips what it reads), and
    whose masks exceed 8 bits: the writer must notice and store what the source gives."""

    class_names = tuple(f"c{k}" for k in range(300))

    def __init__(self, path):
        self.path = path

    def __len__(self):
        return 1

    def image_file(self, index):
        return self.path

    def __getitem__(self, index):
        image = np.asarray(Image.open(self.path).convert("RGB"))[::-1]
        mask = np.arange(image.shape[0] * image.shape[1], dtype=np.int32).reshape(image.shape[:2])
        return {"image": image, "mask": mask % 300, "name": "flipped"}


def test_a_source_that_changes_its_file_is_packed_as_it_reads(tmp_path):
    path = str(tmp_path / "a.png")
    Image.fromarray(np.arange(24 * 3, dtype=np.uint8).reshape(4, 6, 3)).save(path)
    source = _Flipped(path)
    records = [pack.record(source, 0, 1000)]
    assert records[0][1] is False  # not the file's bytes
    assert_same(source[0], packed.decode_example(records[0][0], "x", 1000))


def test_what_png_cannot_hold_round_trips_losslessly():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    example = {
        "image": rng.integers(0, 65536, (5, 7, 4), dtype=np.uint16),  # 4-band 16-bit tile
        "rgb16": rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16),
        "grey": np.broadcast_to(grey[..., None], (5, 7, 3)),  # images.as_rgb's view
        "mask": np.where(grey > 128, 70000, 3).astype(np.int64),  # beyond 16 bits
        "negative": np.full((2, 2), -1, np.int32),
        "distance": rng.standard_normal((5, 7, 2)).astype(np.float32),
        "count": np.int64(3),
        "flag": True,
        "name": "tile",
    }
    assert_same(example, packed.decode_example(packed.encode_example(example, {}), "x", 100))


def test_training_on_the_packed_copy_logs_the_same_numbers(tmp_path):
    """The done-when of issue 23: pack, then train on the copy: the same metrics.jsonl."""
    from jaxseg import input_throughput  # writes the JPEG folder the benchmark uses too

    root = input_throughput.write_folder(str(tmp_path / "f"), count=10, size=(64, 64))
    # The programs of tests/test_train.py's resume test (U-Net width 4, 32x32 crops, 8 steps,
    # 64x64 evaluation), so the session's compilation cache serves both; one evaluation and
    # one checkpoint, at the end.
    common = [
        "--config.data.image_size=(32, 32)",
        "--config.batch_size=8",
        "--config.eval.batch_size=8",
        "--config.model.base_width=4",
        "--config.total_steps=8",
        "--config.log_every=2",
        "--config.eval_every=0",
        "--config.checkpoint_every=0",
    ]
    folder = [
        "--config.data.name=folder",
        f"--config.data.root={root}",
        "--config.data.class_names=('background', 'circle', 'square', 'triangle', 'ring')",
    ]
    pack.main(["--config", f"{UNET}:quick", *common, *folder, "--out", str(tmp_path / "p")])
    copy = ["--config.data.name=packed", f"--config.data.root={tmp_path / 'p'}"]
    runs = {}
    for name, data in (("folder", folder), ("packed", copy)):
        config = cli.load_experiment(f"{UNET}:quick", *common, *data)
        train_and_evaluate(config, str(tmp_path / name))
        with open(tmp_path / name / "metrics.jsonl") as f:
            rows = [json.loads(line) for line in f]
        runs[name] = [{k: v for k, v in r.items() if k != "train/img_per_sec"} for r in rows]
    assert [r["step"] for r in runs["folder"]] == [2, 4, 6, 8, 8]  # 4 train lines, 1 eval
    assert runs["packed"] == runs["folder"]  # every float equal, not close


@pytest.mark.parametrize("kind", ["missing", "not packed", "wrong format"])
def test_a_bad_root_is_one_line_naming_it_exit_2(tmp_path, capsys, kind):
    root = tmp_path / "p"
    if kind != "missing":
        root.mkdir()
    if kind == "wrong format":
        (root / "packed.json").write_text('{"format": "something else"}')
    with pytest.raises(SystemExit) as e:
        train.main(
            ["--config", f"{UNET}:quick", "--config.data.name=packed", f"--config.data.root={root}"]
        )
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(root) in lines[0], lines
    why = {
        "missing": "does not exist",
        "not packed": "has no packed.json",
        "wrong format": "is not",
    }
    assert why[kind] in lines[0]


def test_a_bucket_is_written_and_read_through_epath(bucket, monkeypatch):
    tiny = [
        "--config.data.num_train=3",
        "--config.data.num_val=2",
        "--config.data.image_size=(24, 40)",
    ]
    meta = pack.pack(cli.load_experiment(UNET, *tiny), f"{BUCKET}/p", progress=False)
    assert sorted(os.listdir(bucket / "p")) == [
        "packed.json",
        "test-00000-of-00001.array_record",
        "train-00000-of-00001.array_record",
        "val-00000-of-00001.array_record",
    ]
    assert json.loads((bucket / "p" / "packed.json").read_text()) == meta
    # array_record reads gs:// with its own GCS client, not through epath: at that one
    # point the bucket's URL is turned into the folder the mock keeps the bucket in.
    monkeypatch.setattr(packed, "shard_location", lambda p: str(p).replace(BUCKET, str(bucket)))
    source = make_source("shapes", "train", num_train=3, image_size=(24, 40))
    copy = make_source("packed", "train", root=f"{BUCKET}/p")
    for i in range(3):
        assert_same(source[i], copy[i])
    with pytest.raises(FileNotFoundError, match=f"^{BUCKET}/none does not exist: not a packed"):
        make_source("packed", "train", root=f"{BUCKET}/none")
