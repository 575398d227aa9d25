"""ADE20K scene parsing (the SceneParsing benchmark's ADEChallengeData2016.zip) as it unpacks:

    ROOT/images/{training,validation}/ADE_{train,val}_<8 digits>.jpg
    ROOT/annotations/{training,validation}/ADE_{train,val}_<8 digits>.png

    python -m jaxseg.train --config experiments/segformer_ade20k.py --config.data.root=...

Annotation value 0 ("other objects") is ignored and 1..150 are the classes 0..149 (what
MMSegmentation calls reduce_zero_label). The class names are the benchmark's 150, as
MMSegmentation shortens them (objectInfo150's first name of each), with its palette.
training is the train split, validation the val split; the test images have no masks.
"""

from __future__ import annotations

import os

from jaxseg.data import layout
from jaxseg.data.table import register

CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea",
    "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe",
    "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine",
    "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel",
    "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike",
    "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
PALETTE = layout.hex_palette(
    "787878 B47878 06E6E6 503232 04C803 787850 8C8C8C CC05FF E6E6E6 04FA07 E005FF EBFF07 "
    "96053D 787846 08FF33 FF0652 8FFF8C CCFF04 FF3307 CC4603 0066C8 3DE6FA FF0633 0B66FF "
    "FF0747 FF09E0 0907E6 DCDCDC FF095C 7009FF 08FFD6 07FFE0 FFB806 0AFF47 FF290A 07FFFF "
    "E0FF08 6608FF FF3D06 FFC207 FF7A08 00FF14 FF0829 FF0599 0633FF EB0CFF A09614 00A3FF "
    "8C8C8C FA0A0F 14FF00 1FFF00 FF1F00 FFE000 99FF00 0000FF FF4700 00EBFF 00ADFF 1F00FF "
    "0BC8C8 FF5200 00FFF5 003DFF 00FF70 00FF85 FF0000 FFA300 FF6600 C2FF00 008FFF 33FF00 "
    "0052FF 00FF29 00FFAD 0A00FF ADFF00 00FF99 FF5C00 FF00FF FF00F5 FF0066 FFAD00 FF0014 "
    "FFB8B8 001FFF 00FF3D 0047FF FF00CC 00FFC2 00FF52 000AFF 0070FF 3300FF 00C2FF 007AFF "
    "00FFA3 FF9900 00FF0A FF7000 8FFF00 5200FF A3FF00 FFEB00 08B8AA 8500FF 00FF5C B800FF "
    "FF001F 00B8FF 00D6FF FF0070 5CFF00 00E0FF 70E0FF 46B8A0 A300FF 9900FF 47FF00 FF00A3 "
    "FFCC00 FF008F 00FFEB 85FF00 FF00EB F500FF FF007A FFF500 0ABED4 D6FF00 00CCFF 1400FF "
    "FFFF00 0099FF 0029FF 00FFCC 2900FF 29FF00 AD00FF 00F5FF 4700FF 7A00FF 00FFB8 005CFF "
    "B8FF00 0085FF FFD600 19C2C2 66FF00 5C00FF"
)
# The benchmark's evaluation as MMSegmentation runs it (Resize to (2048, 512), keep ratio):
# the shorter side resized to 512, whole images. 1024 holds aspect ratios up to 2:1; raise
# eval.size for wider panoramas.
EVAL = {"size": (1024, 1024), "shorter_side": 512, "mode": "whole"}

LAYOUT = (
    "ROOT/images/{training,validation}/*.jpg and ROOT/annotations/{training,validation}/*.png "
    "(ADEChallengeData2016)"
)
FOLDERS = {"train": "training", "val": "validation"}


def value_map(ignore_index: int) -> dict[int, int]:
    """Annotation value -> class: 0 ignored, k -> k - 1."""
    return {0: ignore_index} | {k: k - 1 for k in range(1, len(CLASS_NAMES) + 1)}


@register("ade20k")
def build(
    split: str,
    *,
    root: str = "",
    ignore_index: int = 255,
    max_pixels: int = 89_478_485,
    skip_bad: bool = False,
    invalid_to_ignore: bool = False,
):
    layout.check_root(root, "ade20k", "the ADEChallengeData2016 folder")
    if split not in FOLDERS:
        raise ValueError("ade20k: the test images have no public masks (splits: train, val)")
    sub = FOLDERS[split]
    images, masks = (
        (os.path.join("images", sub), ".jpg"),
        (os.path.join("annotations", sub), (".png",)),
    )
    pairs, _ = layout.folder_pairs(root, "ade20k", LAYOUT, images, masks)
    return layout.source(
        root,
        split,
        pairs,
        class_names=CLASS_NAMES,
        palette=PALETTE,
        value_map=value_map(ignore_index),
        ignore_index=ignore_index,
        max_pixels=max_pixels,
        skip_bad=skip_bad,
        invalid_to_ignore=invalid_to_ignore,
    )
