"""The membrane dataset: 30 ISBI 2012 electron-microscopy images and masks in shared/ beside
the repository, read by FolderSource."""

from __future__ import annotations

import os

from jaxseg.data.folder import FolderSource
from jaxseg.data.table import register

# ISBI 2012 EM membranes: masks 0 = membrane, 255 = cell interior; images 0..24 train,
# 25..29 validate. The data lives in shared/ beside the repository (JAXSEG_MEMBRANE overrides).
MEMBRANE_ROOT = os.environ.get(
    "JAXSEG_MEMBRANE",
    os.path.normpath(
        os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "membrane")
    ),
)


@register("membrane")
def build_membrane(
    split: str,
    *,
    root: str = "",
    seed: int = 0,
    ignore_index: int = 255,
    max_pixels: int = 89_478_485,
    skip_bad: bool = False,
    invalid_to_ignore: bool = False,
    channels: int = 3,
):
    if split == "test":
        raise ValueError("the membrane dataset has no test split (train: 0..24, val: 25..29)")
    return FolderSource(
        root or MEMBRANE_ROOT,
        split,
        class_names=("membrane", "cell"),
        value_map={0: 0, 255: 1},
        split_files={"train": tuple(map(str, range(25))), "val": tuple(map(str, range(25, 30)))},
        seed=seed,
        ignore_index=ignore_index,
        max_pixels=max_pixels,
        skip_bad=skip_bad,
        invalid_to_ignore=invalid_to_ignore,
        channels=channels,
    )
