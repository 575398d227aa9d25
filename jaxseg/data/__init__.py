"""Dataset registry: DATASETS maps a config name to a function building a split's source.

A source is grain-compatible (len and getitem), yields
{"image": u8[H,W,C], "mask": u8 or i32[H,W]} and has a `class_names` tuple. Builders take
the data options they use as keyword arguments, and only those: make_source refuses an
option the chosen dataset does not take (jaxseg.recipe names the config field).
"""

from __future__ import annotations

import inspect
import os

from jaxseg.data import folder, shapes, tfds_source


def _shapes(split: str, *, image_size, eval_size, num_train: int, num_val: int, seed: int):
    # Evaluation splits are generated at the evaluation size; val and test are disjoint.
    train = split == "train"
    return shapes.ShapesSource(
        split,
        image_size=tuple(image_size if train else eval_size),
        num_examples=num_train if train else num_val,
        seed=seed,
    )


def _folder(
    split: str,
    *,
    root: str,
    class_names,
    value_map=(),
    palette=(),
    train_list="",
    val_list="",
    test_list="",
    split_ratio=0.8,
    seed=0,
    ignore_index=255,
    max_pixels=89_478_485,
    skip_bad=False,
    invalid_to_ignore=False,
):
    if not root:
        raise ValueError("data.root is empty: set --config.data.root=DIR (images/ and masks/)")
    if not class_names:
        raise ValueError("data.class_names is empty: name the classes of the folder dataset")
    if split == "test":  # only from a list: the ratio split divides stems into train and val
        if not test_list:
            raise ValueError("the folder dataset has no test split: set data.test_list=FILE")
        lists = {"test": test_list}
    else:
        lists = {"train": train_list, "val": val_list} if train_list or val_list else {}
    return folder.FolderSource(
        root,
        split,
        class_names=tuple(class_names),
        value_map=dict(value_map) or None,
        palette=tuple(tuple(c) for c in palette) or None,
        split_files=lists or None,
        split_ratio=split_ratio,
        seed=seed,
        ignore_index=ignore_index,
        max_pixels=max_pixels,
        skip_bad=skip_bad,
        invalid_to_ignore=invalid_to_ignore,
    )


# ISBI 2012 EM membranes: masks 0 = membrane, 255 = cell interior; images 0..24 train,
# 25..29 validate. The data lives in shared/ beside the repository (JAXSEG_MEMBRANE overrides).
MEMBRANE_ROOT = os.environ.get(
    "JAXSEG_MEMBRANE",
    os.path.normpath(
        os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "membrane")
    ),
)


def _membrane(
    split: str,
    *,
    root: str = "",
    seed: int = 0,
    ignore_index: int = 255,
    max_pixels: int = 89_478_485,
    skip_bad: bool = False,
    invalid_to_ignore: bool = False,
):
    if split == "test":
        raise ValueError("the membrane dataset has no test split (train: 0..24, val: 25..29)")
    return folder.FolderSource(
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
    )


def _tfds(
    split: str,
    *,
    tfds_name: str,
    tfds_dir="",
    train_split="",
    val_split="",
    test_split="",
    image_key="",
    mask_key="",
    class_names=(),
    value_map=(),
    ignore_index=255,
):
    if not tfds_name:
        raise ValueError("data.tfds_name is empty: name the TFDS dataset, e.g. oxford_iiit_pet")
    preset = tfds_source.PRESETS.get(tfds_name.split(":")[0], {})
    fields = {
        "train_split": train_split,
        "val_split": val_split,
        "test_split": test_split,
        "image_key": image_key,
        "mask_key": mask_key,
        "class_names": tuple(class_names),
        "value_map": dict(value_map),
    }
    # Config fields win over the preset; what neither gives is an error naming the field.
    chosen = {k: v or preset.get(k) for k, v in fields.items()}
    missing = [
        k
        for k in ("train_split", "val_split", "image_key", "mask_key", "class_names")
        if not chosen[k]
    ]
    if missing:
        raise ValueError(
            f"data.tfds_name={tfds_name!r} has no preset; set data.{missing[0]} "
            f"(presets: {', '.join(sorted(tfds_source.PRESETS))})"
        )
    if split == "test" and not chosen["test_split"]:
        raise ValueError(f"data.tfds_name={tfds_name!r} has no test split: set data.test_split")
    return tfds_source.TfdsSource(
        tfds_name,
        chosen[f"{split}_split"],
        data_dir=tfds_dir,
        image_key=chosen["image_key"],
        mask_key=chosen["mask_key"],
        class_names=chosen["class_names"],
        value_map=chosen["value_map"] or None,
        ignore_index=ignore_index,
    )


DATASETS = {"folder": _folder, "membrane": _membrane, "shapes": _shapes, "tfds": _tfds}


SPLITS = ("train", "val", "test")


def options_of(name: str) -> tuple[str, ...]:
    """The keyword options DATASETS[name] takes."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS))}")
    params = inspect.signature(DATASETS[name]).parameters
    return tuple(p for p in params if p != "split")


def make_source(name: str, split: str, **options):
    """DATASETS[name](split, **options) with the options it takes (others are the caller's
    to refuse: see jaxseg.recipe); an unknown name or split lists the valid ones."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    taken = options_of(name)
    return DATASETS[name](split, **{k: v for k, v in options.items() if k in taken})
