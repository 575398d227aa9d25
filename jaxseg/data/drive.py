"""DRIVE retinal vessels (the DRIVE challenge's training.zip and test.zip) as they unpack:

    ROOT/training/images/<nn>_training.tif     ROOT/test/images/<nn>_test.tif
    ROOT/training/1st_manual/<nn>_manual1.gif  ROOT/test/1st_manual/<nn>_manual1.gif
    ROOT/training/mask/<nn>_training_mask.gif  ROOT/test/mask/<nn>_test_mask.gif

    python -m jaxseg.train --config experiments/unet.py --config.data.name=drive \
        --config.data.root=/data/DRIVE

Classes background and vessel: a manual annotation's pixel is vessel when it shows at
least half white (grey >= 128; MMSegmentation's converter divides by 128), whatever the
GIF's palette. test is also the val split, as MMSegmentation uses it. data.fov_ignore=True
ignores the pixels outside the field of view (the black of mask/*_mask.gif), as the
challenge's evaluation counts only those inside.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from jaxseg.data import images as image_io
from jaxseg.data import layout
from jaxseg.data.folder import BadExampleError, FolderSource
from jaxseg.data.table import register

CLASS_NAMES = ("background", "vessel")
PALETTE = ((120, 120, 120), (6, 230, 230))  # MMSegmentation's
# MMSegmentation's evaluation: the whole 584x565 images in 64x64 windows every 42 pixels.
EVAL = {"size": (584, 565), "shorter_side": 0, "mode": "slide", "crop_size": (64, 64),
        "stride": (42, 42)}  # fmt: skip

LAYOUT = (
    "ROOT/{training,test}/images/*.tif, ROOT/{training,test}/1st_manual/*_manual1.gif "
    "(and mask/*_mask.gif) (DRIVE)"
)
FOLDERS = {"train": "training", "val": "test", "test": "test"}
MASK_FORMATS = (*image_io.FORMATS, "GIF")


class DriveSource(FolderSource):
    """FolderSource reading DRIVE's GIF annotations as vessel = shown grey >= 128, and, with
    fov_masks ({name: path relative to root}), ignoring the pixels outside the field of view."""

    def __init__(self, *args, fov_masks: dict | None = None, **kwargs):
        self.fov_masks = dict(fov_masks or {})  # before FolderSource's skip_bad reads pairs
        super().__init__(*args, **kwargs)

    def _open(self, path: str) -> Image.Image:
        try:
            return image_io.open_image(path, self.max_pixels, MASK_FORMATS)
        except image_io.ImageError as e:
            raise BadExampleError(str(e)) from e

    def _mask_array(self, img: Image.Image, path: str) -> np.ndarray:
        """u8[H,W]: 1 where the annotation shows white, 0 elsewhere."""
        return (np.asarray(img.convert("L")) >= 128).astype(np.uint8)

    def _load(self, stem: str, image_name: str, mask_name: str) -> dict:
        example = super()._load(stem, image_name, mask_name)
        if stem in self.fov_masks:
            path = os.path.join(self.root, self.fov_masks[stem])
            inside = self._mask_array(self._open(path), path)
            if inside.shape != example["mask"].shape:
                raise BadExampleError(
                    f"size mismatch: field-of-view mask {path} is {inside.shape[::-1]} (WxH), "
                    f"annotation {os.path.join(self.root, mask_name)} is "
                    f"{example['mask'].shape[::-1]}"
                )
            example["mask"] = np.where(inside == 1, example["mask"], self.ignore_index)
            example["mask"] = example["mask"].astype(self._mask_dtype)
        return example


@register("drive")
def build(
    split: str,
    *,
    root: str = "",
    fov_ignore: bool = False,
    ignore_index: int = 255,
    max_pixels: int = 89_478_485,
    skip_bad: bool = False,
    invalid_to_ignore: bool = False,
):
    layout.check_root(root, "drive", "the folder holding training/ and test/")
    sub = FOLDERS[split]
    pairs, _ = layout.folder_pairs(
        root,
        "drive",
        LAYOUT,
        (os.path.join(sub, "images"), ".tif"),
        (os.path.join(sub, "1st_manual"), ("_manual1.gif",)),
        mask_key=lambda key: key.split("_")[0],  # "21_training" -> "21_manual1.gif"
    )
    fov = None
    if fov_ignore:
        fov = {name: os.path.join(sub, "mask", name + "_mask.gif") for name, _, _ in pairs}
        missing = [p for p in fov.values() if not os.path.isfile(os.path.join(root, p))]
        if missing:
            shown = [os.path.join(root, p) for p in missing]
            raise layout.LayoutError(
                f"drive: data.fov_ignore=True but {len(missing)} field-of-view masks are "
                f"missing: {layout.examples(shown)}"
            )
    return layout.source(
        root,
        split,
        pairs,
        cls=DriveSource,
        fov_masks=fov,
        class_names=CLASS_NAMES,
        palette=PALETTE,
        value_map=None,
        ignore_index=ignore_index,
        max_pixels=max_pixels,
        skip_bad=skip_bad,
        invalid_to_ignore=invalid_to_ignore,
    )
