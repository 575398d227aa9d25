"""COCO-Stuff 164k (stuffthingmaps_trainval2017.zip with COCO 2017's images) as it unpacks:

    ROOT/images/{train2017,val2017}/<12 digits>.jpg
    ROOT/annotations/{train2017,val2017}/<12 digits>.png

    python -m jaxseg.train --config experiments/unet.py --config.data.name=coco_stuff \
        --config.data.root=/data/coco_stuff164k

The annotations hold the raw ids 0..181 (COCO's 91 things, 11 of them never used, then
the 91 stuff classes) and 255 for unlabeled; the 171 ids in use map, in order, to the train
ids 0..170 (MMSegmentation's coco_stuff164k converter), 255 and the unused ids to
ignore. When every image of a split has a `<name>_labelTrainIds.png` beside its raw
annotation (that converter's output), those are read instead, as they are.
"""

from __future__ import annotations

import os

from jaxseg.data import layout
from jaxseg.data.table import register

CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush", "banner", "blanket", "branch", "bridge", "building-other", "bush",
    "cabinet", "cage", "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth",
    "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff", "dirt",
    "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile",
    "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass",
    "gravel", "ground-other", "hill", "house", "leaves", "light", "mat", "metal",
    "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement",
    "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad",
    "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other",
    "skyscraper", "snow", "solid-other", "stairs", "stone", "straw", "structural-other",
    "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick",
    "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood",
    "water-other", "waterdrops", "window-blind", "window-other", "wood",
)  # fmt: skip
# MMSegmentation's palette (it gives some classes the same colour, e.g. person and bicycle).
PALETTE = layout.hex_palette(
    "00C040 00C040 004060 80C0C0 004040 00C0E0 00C0C0 80C040 00C060 80C040 8020C0 0000E0 "
    "000040 00A0C0 800060 8000C0 0020C0 8080E0 0000C0 80A0C0 808000 800020 802000 800080 "
    "408020 00A000 000000 C080A0 002000 008080 4080A0 80A000 008000 C08020 806080 000080 "
    "400020 00E080 800000 C000A0 006080 808080 4000A0 80E080 808040 C00020 806000 8000C0 "
    "008020 40E000 000040 8080A0 406000 0080C0 0080A0 C0E000 008040 808020 C02080 0040C0 "
    "000020 40A080 804040 8000A0 402080 80C0C0 0000A0 C0A080 80C000 800060 C02000 804080 "
    "408060 40A000 004000 C080E0 402000 00C080 4080E0 C0A000 00C000 C08060 C06080 004080 "
    "400060 40E080 804000 C000E0 406080 80C080 4000E0 C0E080 80C040 C00060 C06000 8040C0 "
    "008060 00E000 404040 8080E0 006000 40C0C0 0080E0 80E000 40C040 808060 802080 4000C0 "
    "004060 00A080 C00040 8040E0 002080 C080C0 0040E0 80A080 C08000 804020 802040 C00080 "
    "40C020 00A040 400000 C0C0A0 002040 408080 40C0A0 80A040 408000 C0C020 8060C0 400080 "
    "404020 00E0C0 C00000 C040A0 0060C0 C08080 4040A0 80E0C0 C08040 C04020 806040 C000C0 "
    "00C020 40E040 400040 80C0A0 406040 4080C0 00C0A0 C0E040 408040 80C020 C020C0 4040C0 "
    "004020 40A0C0 C04040 8040A0 4020C0 C0C0C0 0040A0 C0A0C0 C0C000 804060 C02040 C04080 "
    "40C060 40A040 404000"
)
# The thing ids (0-based) COCO defines but never annotates.
UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
# MMSegmentation's evaluation (Resize to (2048, 512), keep ratio): the shorter side resized
# to 512, whole images (COCO images are at most 640 a side: 1024 holds 2:1).
EVAL = {"size": (1024, 1024), "shorter_side": 512, "mode": "whole"}

LAYOUT = (
    "ROOT/images/{train2017,val2017}/*.jpg and ROOT/annotations/{train2017,val2017}/*.png "
    "(COCO-Stuff 164k)"
)
FOLDERS = {"train": "train2017", "val": "val2017"}
_TRAIN_IDS = "_labelTrainIds.png"


def value_map(ignore_index: int) -> dict[int, int]:
    """Raw id -> train id: the used ids of 0..181 in order, 255 and unused ids ignored."""
    used = [k for k in range(182) if k not in UNUSED_IDS]
    return {k: ignore_index for k in (*UNUSED_IDS, 255)} | {k: i for i, k in enumerate(used)}


@register("coco_stuff")
def build(
    split: str,
    *,
    root: str = "",
    ignore_index: int = 255,
    max_pixels: int = 89_478_485,
    skip_bad: bool = False,
    invalid_to_ignore: bool = False,
):
    layout.check_root(root, "coco_stuff", "the folder holding images/ and annotations/")
    if split not in FOLDERS:
        raise ValueError("coco_stuff: the test images have no public masks (splits: train, val)")
    sub = FOLDERS[split]
    images = (os.path.join("images", sub), ".jpg")
    masks = (os.path.join("annotations", sub), (_TRAIN_IDS, ".png"))  # train ids if all have
    pairs, suffix = layout.folder_pairs(root, "coco_stuff", LAYOUT, images, masks)
    train_ids = suffix == _TRAIN_IDS
    identity = {k: k for k in range(len(CLASS_NAMES))} | {255: ignore_index}
    return layout.source(
        root,
        split,
        pairs,
        class_names=CLASS_NAMES,
        palette=PALETTE,
        value_map=identity if train_ids else value_map(ignore_index),
        ignore_index=ignore_index,
        max_pixels=max_pixels,
        skip_bad=skip_bad,
        invalid_to_ignore=invalid_to_ignore,
    )
