"""Pascal VOC 2012 segmentation as VOCtrainval_11-May-2012.tar unpacks, and the same with the
SBD annotations added (`voc_aug`, the 10,582-image train_aug set DeepLab trains on):

    ROOT/JPEGImages/<name>.jpg                      (ROOT: VOC2012, or VOCdevkit above it)
    ROOT/SegmentationClass/<name>.png               palette PNGs: the index is the class,
    ROOT/ImageSets/Segmentation/{train,val}.txt     255 the ignored object borders
    voc_aug, either:
    ROOT/SegmentationClassAug/<name>.png            (the usual converted copy of SBD), or
    SBD/dataset/cls/<name>.mat                      (SBD as released: data.sbd_root=SBD)

    python -m jaxseg.train --config experiments/deeplabv3plus_voc.py --config.data.root=...

voc_aug's train split is ImageSets/Segmentation/trainaug.txt (or train_aug.txt) when
present, else made as MMSegmentation's converter makes it: VOC train and SBD train and val,
less VOC val. As there, images of VOC train keep VOC's own masks (with their borders),
the others take SBD's. Both evaluate on VOC val; there is no public test split.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from PIL import Image

from jaxseg.data import layout
from jaxseg.data.folder import BadExampleError, FolderSource
from jaxseg.data.table import register

CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
# The benchmark's evaluation as MMSegmentation runs it: shorter side resized to 512, whole
# images. VOC images are at most 500 pixels a side, so 1024 holds up to a 2:1 aspect ratio.
EVAL = {"size": (1024, 1024), "shorter_side": 512, "mode": "whole"}

LAYOUT = (
    "ROOT/JPEGImages/*.jpg, ROOT/SegmentationClass/*.png and "
    "ROOT/ImageSets/Segmentation/{train,val}.txt (ROOT: VOC2012 or VOCdevkit)"
)
AUG_LAYOUT = "ROOT/SegmentationClassAug/*.png, or data.sbd_root=SBD with SBD/dataset/cls/*.mat"
_LISTS = os.path.join("ImageSets", "Segmentation")


def colormap(n: int = 256) -> tuple[tuple[int, int, int], ...]:
    """The VOC devkit's colour map (labelcolormap.m): the bits of the index, three at a time,
    spread over the high bits of red, green and blue."""
    colours = []
    for i in range(n):
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


PALETTE = colormap(len(CLASS_NAMES))


def voc_root(root: str, dataset: str) -> str:
    """The VOC2012 folder: root itself, or root/VOC2012 when root is VOCdevkit."""
    layout.check_root(root, dataset, "the VOC2012 folder, or VOCdevkit above it")
    inner = os.path.join(root, "VOC2012")
    root = inner if os.path.isdir(inner) else root
    layout.folder(os.path.join(root, "JPEGImages"), dataset, LAYOUT)
    return root


def value_map(ignore_index: int) -> dict[int, int]:
    """Palette index -> class: 0..20 themselves, the 255 borders ignore_index."""
    return {k: k for k in range(len(CLASS_NAMES))} | {255: ignore_index}


def _pairs(root, names, mask_of, dataset):
    return layout.pair(
        names, lambda n: os.path.join("JPEGImages", n + ".jpg"), mask_of, root, dataset
    )


def _voc_mask(name: str) -> str:
    return os.path.join("SegmentationClass", name + ".png")


def _split_list(root: str, split: str, dataset: str) -> list[str]:
    if split == "test":
        raise ValueError(f"{dataset}: VOC 2012 has no public test split with masks (train, val)")
    return layout.read_list(os.path.join(root, _LISTS, f"{split}.txt"), dataset, LAYOUT)


def _common(ignore_index, max_pixels, skip_bad, invalid_to_ignore) -> dict:
    return dict(
        class_names=CLASS_NAMES,
        palette=PALETTE,
        value_map=value_map(ignore_index),
        ignore_index=ignore_index,
        max_pixels=max_pixels,
        skip_bad=skip_bad,
        invalid_to_ignore=invalid_to_ignore,
    )


@register("voc")
def build(
    split: str,
    *,
    root: str = "",
    ignore_index: int = 255,
    max_pixels: int = 89_478_485,
    skip_bad: bool = False,
    invalid_to_ignore: bool = False,
):
    root = voc_root(root, "voc")
    names = _split_list(root, split, "voc")
    pairs = _pairs(root, names, _voc_mask, "voc")
    return layout.source(
        root, split, pairs, **_common(ignore_index, max_pixels, skip_bad, invalid_to_ignore)
    )


class SbdSource(FolderSource):
    """FolderSource that also reads SBD's cls/*.mat masks (the struct GTcls, its field
    Segmentation: class indices 0..20) as "L" images, so they are checked like PNGs."""

    def _open(self, path: str) -> Image.Image:
        if not path.endswith(".mat"):
            return super()._open(path)
        import scipy.io  # only SBD's masks need it

        try:
            labels = np.asarray(scipy.io.loadmat(path)["GTcls"]["Segmentation"][0][0])
        except (scipy.io.matlab.MatReadError, OSError, ValueError, LookupError, TypeError) as e:
            raise BadExampleError(
                f"cannot read {path} as SBD's GTcls.Segmentation: {type(e).__name__}: {e}"
            ) from e
        if labels.ndim != 2 or labels.size > self.max_pixels or labels.dtype.kind not in "ui":
            raise BadExampleError(
                f"{path}: GTcls.Segmentation is {labels.dtype}{list(labels.shape)}, not an "
                f"integer image of at most max_pixels={self.max_pixels} pixels"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise BadExampleError(f"{path}: GTcls.Segmentation values outside 0..255")
        return Image.fromarray(labels.astype(np.uint8), mode="L")


def _sbd_dataset(sbd_root: str) -> str:
    """SBD's `dataset` folder (holding cls/): sbd_root itself or sbd_root/dataset."""
    inner = os.path.join(sbd_root, "dataset")
    return inner if os.path.isdir(os.path.join(inner, "cls")) else sbd_root


def _aug_masks(root: str, sbd_root: str) -> tuple[dict, Callable[[str], str]]:
    """({name: ...} of the SBD masks found, name -> that mask's path relative to root)."""
    aug = os.path.join(root, "SegmentationClassAug")
    if not sbd_root:
        if not os.path.isdir(aug):
            raise layout.LayoutError(f"voc_aug: {aug} is not a folder; expected {AUG_LAYOUT}")
        found = layout.files(aug, ".png", "voc_aug", AUG_LAYOUT)
        return found, lambda n: os.path.join("SegmentationClassAug", n + ".png")
    cls = os.path.join(_sbd_dataset(sbd_root), "cls")
    found = layout.files(cls, ".mat", "voc_aug", AUG_LAYOUT)
    return found, lambda n: os.path.join(os.path.abspath(cls), n + ".mat")


def train_aug_names(root: str, sbd_root: str, sbd_names) -> list[str]:
    """The train_aug list: a list file in ImageSets/Segmentation, else (VOC train + SBD's
    train and val lists, or every SBD mask without them) - VOC val, sorted."""
    for name in ("trainaug.txt", "train_aug.txt"):
        path = os.path.join(root, _LISTS, name)
        if os.path.isfile(path):
            return layout.read_list(path, "voc_aug", LAYOUT)
    sbd = set(sbd_names)
    if sbd_root:
        lists = [os.path.join(_sbd_dataset(sbd_root), f) for f in ("train.txt", "val.txt")]
        if all(os.path.isfile(p) for p in lists):
            sbd = {n for p in lists for n in layout.read_list(p, "voc_aug", AUG_LAYOUT)}
    voc_train = _split_list(root, "train", "voc_aug")
    voc_val = _split_list(root, "val", "voc_aug")
    return sorted((set(voc_train) | sbd) - set(voc_val))


@register("voc_aug")
def build_aug(
    split: str,
    *,
    root: str = "",
    sbd_root: str = "",
    ignore_index: int = 255,
    max_pixels: int = 89_478_485,
    skip_bad: bool = False,
    invalid_to_ignore: bool = False,
):
    root = voc_root(root, "voc_aug")
    if split != "train":
        pairs = _pairs(root, _split_list(root, split, "voc_aug"), _voc_mask, "voc_aug")
    else:
        sbd_names, sbd_mask = _aug_masks(root, sbd_root)
        voc_train = set(_split_list(root, "train", "voc_aug"))
        names = train_aug_names(root, sbd_root, sbd_names)
        pairs = _pairs(
            root, names, lambda n: _voc_mask(n) if n in voc_train else sbd_mask(n), "voc_aug"
        )
    return layout.source(
        root,
        split,
        pairs,
        cls=SbdSource,
        **_common(ignore_index, max_pixels, skip_bad, invalid_to_ignore),
    )
