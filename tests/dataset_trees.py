"""Tiny fake copies of the providers' layouts, with their real file names and encodings, for
the dataset readers' tests and for trying the readers by hand:

    PYTHONPATH=. python tests/dataset_trees.py /tmp/trees     # prints NAME ROOT per dataset
    python -m jaxseg.train --config experiments/unet.py:quick --config.data.name=cityscapes \
        --config.data.root=/tmp/trees/cityscapes --config.total_steps=2 --workdir /tmp/w

Every mask is vertical stripes of the STORED values of its dataset (stripes(values, h, w)),
so a test knows what each pixel holds on disk; images are seeded noise. Each train split
has TRAIN images, one batch of unet.py:quick (16: the pipeline refuses fewer examples than
a batch), and images are at most 64x64, so its evaluation canvas (64x64) holds them.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import scipy.io
from PIL import Image

TRAIN = 16
# The values written into every mask of each dataset, left to right.
STORED = {
    "cityscapes": (
        7,
        26,
        0,
        24,
        33,
        8,
    ),  # label ids: road, car, unlabeled, person, bicycle, sidewalk
    "voc": (0, 15, 255, 7, 20),  # palette indices: background, person, border, car, tv
    "sbd": (0, 15, 7, 20, 1),  # SBD has no borders
    "ade20k": (0, 1, 150, 13, 3),  # 0 other, then classes 1..150
    "coco_stuff": (0, 12, 255, 181, 91),  # raw ids, 255 unlabeled
    "camvid": (0, 3, 11, 8, 10),  # 11 is void
    "drive": (0, 255, 0, 255),  # 255: vessel
}


def stripes(values, h: int, w: int) -> np.ndarray:
    """u8[h,w] whose column j holds values[j * len(values) // w]."""
    columns = np.asarray(values, np.uint8)[np.arange(w) * len(values) // w]
    return np.broadcast_to(columns, (h, w)).copy()


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(array: np.ndarray, path: str, **kwargs) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def cityscapes(root: str, h: int = 32, w: int = 64) -> str:
    """train: aachen + bochum (TRAIN); val: frankfurt (2); test: berlin (1, labels all 0)."""
    half = TRAIN // 2
    cities = {
        "train": {"aachen": half, "bochum": TRAIN - half},
        "val": {"frankfurt": 2},
        "test": {"berlin": 1},
    }
    seed = 0
    for split, counts in cities.items():
        for city, n in counts.items():
            for i in range(n):
                name = f"{city}_{i:06d}_{19 + i:06d}"
                seed += 1
                _save(
                    _noise(h, w, seed), f"{root}/leftImg8bit/{split}/{city}/{name}_leftImg8bit.png"
                )
                gt = f"{root}/gtFine/{split}/{city}/{name}_gtFine_"
                ids = stripes(STORED["cityscapes"], h, w) if split != "test" else np.zeros((h, w))
                _save(ids.astype(np.uint8), gt + "labelIds.png")
                _save(_noise(h, w, seed), gt + "color.png")  # also in the release; not read
                with open(gt + "polygons.json", "w") as f:
                    f.write("{}")
    return root


def _voc_palette() -> list[int]:
    """The VOC devkit colour map, written out by hand for the classes the tree uses and
    grey elsewhere (a PNG's palette is data: the reader must ignore it)."""
    colours = {0: (0, 0, 0), 7: (128, 128, 128), 15: (192, 128, 128), 20: (0, 64, 128)}
    colours[255] = (224, 224, 192)
    return [v for k in range(256) for v in colours.get(k, (90, 90, 90))]


def voc(devkit: str, h: int = 40, w: int = 48) -> str:
    """devkit/VOC2012 with train (TRAIN: 2007_000100...) / val (2007_000033, 2007_000042)
    lists, their JPEGs and palette-PNG masks, SegmentationClassAug (the SBD names
    2007_000033, 2008_000001..3) and SBD as released beside it
    (devkit/../benchmark_RELEASE/dataset/{cls/*.mat, train.txt, val.txt})."""
    voc_root = f"{devkit}/VOC2012"
    train = [f"2007_{100 + i:06d}" for i in range(TRAIN)]
    val = ["2007_000033", "2007_000042"]
    sbd_train, sbd_val = ["2008_000001", "2008_000002", "2007_000033"], ["2008_000003"]
    names = sorted(set(train + val + sbd_train + sbd_val))
    for i, name in enumerate(names):
        _save(_noise(h, w, 100 + i), f"{voc_root}/JPEGImages/{name}.jpg", quality=90)
    lists = f"{voc_root}/ImageSets/Segmentation"
    os.makedirs(lists)
    for split, listed in (("train", train), ("val", val), ("trainval", train + val)):
        with open(f"{lists}/{split}.txt", "w") as f:
            f.write("".join(n + "\n" for n in listed))
    for name in train + val:
        mask = Image.fromarray(stripes(STORED["voc"], h, w), mode="P")
        mask.putpalette(_voc_palette())
        os.makedirs(f"{voc_root}/SegmentationClass", exist_ok=True)
        mask.save(f"{voc_root}/SegmentationClass/{name}.png")
    sbd = f"{os.path.dirname(devkit)}/benchmark_RELEASE/dataset"
    os.makedirs(f"{sbd}/cls")
    for split, listed in (("train", sbd_train), ("val", sbd_val)):
        with open(f"{sbd}/{split}.txt", "w") as f:
            f.write("".join(n + "\n" for n in listed))
    for name in sbd_train + sbd_val:
        labels = stripes(STORED["sbd"], h, w)
        _save(labels, f"{voc_root}/SegmentationClassAug/{name}.png")
        # SBD's struct GTcls (savemat writes a dict as a MATLAB struct).
        boundaries = np.zeros((1, 1), dtype=object)
        gt = {"Segmentation": labels, "Boundaries": boundaries, "CategoriesPresent": [[15]]}
        scipy.io.savemat(f"{sbd}/cls/{name}.mat", {"GTcls": gt})
    return devkit


def ade20k(root: str, h: int = 48, w: int = 64) -> str:
    """training: TRAIN images, validation: 2."""
    for split, prefix, n in (("training", "train", TRAIN), ("validation", "val", 2)):
        for i in range(1, n + 1):
            name = f"ADE_{prefix}_{i:08d}"
            _save(_noise(h, w, 200 + i), f"{root}/images/{split}/{name}.jpg", quality=90)
            _save(stripes(STORED["ade20k"], h, w), f"{root}/annotations/{split}/{name}.png")
    return root


def coco_stuff(root: str, h: int = 48, w: int = 64) -> str:
    """train2017: TRAIN images, val2017: 2 (raw stuffthingmaps annotations)."""
    ids = {"train2017": tuple(range(9, 9 + TRAIN)), "val2017": (139, 285)}
    for split, numbers in ids.items():
        for i, number in enumerate(numbers):
            name = f"{number:012d}"
            _save(_noise(h, w, 300 + i), f"{root}/images/{split}/{name}.jpg", quality=90)
            _save(stripes(STORED["coco_stuff"], h, w), f"{root}/annotations/{split}/{name}.png")
    return root


def camvid(root: str, h: int = 36, w: int = 48) -> str:
    """train TRAIN, val 2, test 2 (SegNet's file names)."""
    names = {
        "train": [f"0001TP_{6690 + 30 * i:06d}" for i in range(TRAIN - 1)] + ["Seq05VD_f00000"],
        "val": ["0016E5_07959", "0016E5_07961"],
        "test": ["0001TP_008550", "Seq05VD_f05100"],
    }
    for split, listed in names.items():
        for i, name in enumerate(listed):
            _save(_noise(h, w, 400 + i), f"{root}/{split}/{name}.png")
            _save(stripes(STORED["camvid"], h, w), f"{root}/{split}annot/{name}.png")
    return root


def drive(root: str, h: int = 40, w: int = 38) -> str:
    """training 21.. (TRAIN), test 01..02: RGB TIFFs, GIF annotations (the first of each split
    from a 2-colour palette, index 1 white, the others from greyscale) and GIF field-of-view
    masks black in the first 8 columns."""
    for split, numbers in (("training", range(21, 21 + TRAIN)), ("test", (1, 2))):
        for i, number in enumerate(numbers):
            stem = f"{number:02d}_{split}"
            _save(_noise(h, w, 500 + number), f"{root}/{split}/images/{stem}.tif")
            vessels = stripes(STORED["drive"], h, w)
            path = f"{root}/{split}/1st_manual/{number:02d}_manual1.gif"
            if i == 0:
                two = Image.fromarray((vessels > 0).astype(np.uint8), mode="P")
                two.putpalette([0, 0, 0, 255, 255, 255])
                os.makedirs(os.path.dirname(path), exist_ok=True)
                two.save(path)
            else:
                _save(vessels, path)
            fov = np.full((h, w), 255, np.uint8)
            fov[:, :8] = 0
            _save(fov, f"{root}/{split}/mask/{stem}_mask.gif")
    return root


def build_all(out: str) -> dict[str, str]:
    """{dataset name: root} of one tree per dataset under out."""
    return {
        "cityscapes": cityscapes(f"{out}/cityscapes"),
        "voc": voc(f"{out}/voc/VOCdevkit") + "/VOC2012",
        "ade20k": ade20k(f"{out}/ade20k/ADEChallengeData2016"),
        "coco_stuff": coco_stuff(f"{out}/coco_stuff"),
        "camvid": camvid(f"{out}/camvid"),
        "drive": drive(f"{out}/drive"),
    }


if __name__ == "__main__":
    if len(sys.argv) != 2 or os.path.exists(sys.argv[1]):
        sys.exit("usage: python tests/dataset_trees.py OUT  (OUT must not exist)")
    for dataset, where in build_all(sys.argv[1]).items():
        print(dataset, where)
    print(
        "voc_aug",
        f"{sys.argv[1]}/voc/VOCdevkit/VOC2012 (sbd_root: {sys.argv[1]}/voc/benchmark_RELEASE)",
    )
