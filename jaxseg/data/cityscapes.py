"""Cityscapes as its download unpacks (leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip):

    ROOT/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

    python -m jaxseg.train --config experiments/deeplabv3plus_cityscapes.py \
        --config.data.root=/data/cityscapes

The 34 label ids map to the 19 training classes of the benchmark (cityscapesScripts'
labels.py trainId table); every other id (void, license plate, the classes not evaluated)
is ignored. When every mask of a split has a `_gtFine_labelTrainIds.png` beside it
(cityscapesScripts' createTrainIdLabelImgs), those are read instead, as they are: 0..18
and 255. The test split's public masks hold no labels (all ignored).
"""

from __future__ import annotations

import os

from jaxseg.data import layout
from jaxseg.data.table import register

CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
# Label id of each training class, in train-id order (labels.py: the ids with trainId < 255).
LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
# The benchmark's evaluation (the eval section's fields): the full 1024x2048 images, in
# sliding windows of the training crop (MMSegmentation's convention for Cityscapes).
EVAL = {"size": (1024, 2048), "shorter_side": 0, "mode": "slide"}

LAYOUT = (
    "ROOT/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png and "
    "ROOT/gtFine/<split>/<city>/<name>_gtFine_labelIds.png (Cityscapes)"
)
_IMAGE, _IDS, _TRAIN_IDS = "_leftImg8bit.png", "_gtFine_labelIds.png", "_gtFine_labelTrainIds.png"


def label_map(ignore_index: int) -> dict[int, int]:
    """Stored label id (any byte) -> train id, ignore_index for all but the 19."""
    return {k: ignore_index for k in range(256)} | {k: i for i, k in enumerate(LABEL_IDS)}


def pairs(root: str, split: str) -> tuple[list[tuple[str, str, str]], bool]:
    """(the split's (name, image, mask) pairs relative to root, whether the masks are the
    labelTrainIds files)."""
    images = (os.path.join("leftImg8bit", split), _IMAGE)  # keys <city>/<city>_<seq>_<frame>
    masks = (os.path.join("gtFine", split), (_TRAIN_IDS, _IDS))  # train ids if all have them
    found, suffix = layout.folder_pairs(root, "cityscapes", LAYOUT, images, masks, nested=True)
    return found, suffix == _TRAIN_IDS


@register("cityscapes")
def build(
    split: str,
    *,
    root: str = "",
    ignore_index: int = 255,
    max_pixels: int = 89_478_485,
    skip_bad: bool = False,
    invalid_to_ignore: bool = False,
):
    layout.check_root(root, "cityscapes", "the folder holding leftImg8bit/ and gtFine/")
    found, train_ids = pairs(root, split)
    identity = {k: k for k in range(len(CLASS_NAMES))} | {255: ignore_index}
    return layout.source(
        root,
        split,
        found,
        class_names=CLASS_NAMES,
        palette=PALETTE,
        value_map=identity if train_ids else label_map(ignore_index),
        ignore_index=ignore_index,
        max_pixels=max_pixels,
        skip_bad=skip_bad,
        invalid_to_ignore=invalid_to_ignore,
    )
