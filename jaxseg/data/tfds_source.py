"""TFDS datasets read through `tfds.data_source` (array_record; no TensorFlow at train time).

    python -m jaxseg.train --config experiments/unet.py --config.data.name=tfds \
        --config.data.tfds_name=oxford_iiit_pet --config.data.tfds_dir=/data/tfds

The dataset must already be prepared in tfds_dir (`tfds build`, or a copy of its files):
jaxseg never downloads. PRESETS know the image and mask keys, splits and label maps of the
TFDS datasets that carry segmentation masks; anything else is configured field by field.
"""

from __future__ import annotations

import numpy as np

from jaxseg.data import ade20k, cityscapes
from jaxseg.data.table import register

PRESETS = {
    # Trimaps: 1 pet, 2 background, 3 border.
    "oxford_iiit_pet": dict(
        image_key="image", mask_key="segmentation_mask", train_split="train", val_split="test",
        class_names=("pet", "background", "border"), value_map={1: 0, 2: 1, 3: 2},
    ),
    # ADE20K scene parsing: 0 is "other" (ignored), 1..150 the classes.
    "scene_parse150": dict(
        image_key="image", mask_key="annotation", train_split="train", val_split="test",
        class_names=ade20k.CLASS_NAMES, value_map=ade20k.value_map(255),
    ),
    # Needs the manual download that TFDS describes for cityscapes.
    "cityscapes/semantic_segmentation": dict(
        image_key="image_left", mask_key="segmentation_label", train_split="train",
        val_split="validation",
        class_names=cityscapes.CLASS_NAMES, value_map=cityscapes.label_map(255),
    ),
}  # fmt: skip


class TfdsSource:
    """A split of a prepared TFDS dataset as {"image": u8[H,W,3], "mask": u8 or i32[H,W]}."""

    def __init__(
        self,
        name: str,
        split: str,
        *,
        data_dir: str | None,
        image_key: str,
        mask_key: str,
        class_names: tuple[str, ...],
        value_map: dict[int, int] | None = None,
        ignore_index: int = 255,
    ):
        import tensorflow_datasets as tfds  # heavy import, only for this source

        self.name, self.split = name, split
        self.image_key, self.mask_key = image_key, mask_key
        self.class_names = tuple(class_names)
        self.ignore_index = ignore_index
        try:
            self._source = tfds.data_source(name, split=split, data_dir=data_dir or None)
        except Exception as e:  # tfds raises several types; the user needs name, split, dir
            raise FileNotFoundError(
                f"TFDS dataset {name!r} split {split!r} not found or not prepared in "
                f"{data_dir or 'the default TFDS data dir'}: {e}"
            ) from e
        self._lut = None
        if value_map:
            self._lut = np.full(max(value_map) + 1, -1, np.int32)
            for stored, cls in value_map.items():
                self._lut[stored] = cls

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        example = self._source[int(index)]
        where = f"{self.name}[{self.split}][{index}]"
        image, mask = np.asarray(example[self.image_key]), np.asarray(example[self.mask_key])
        if image.ndim == 2 or image.shape[-1] == 1:
            image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
        if mask.ndim == 3:
            mask = mask[..., 0]
        if image.shape[:2] != mask.shape:
            raise ValueError(f"{where}: image {image.shape[:2]} and mask {mask.shape} differ")
        if self._lut is not None:
            values = np.unique(mask)
            unmapped = values[
                (values >= len(self._lut)) | (self._lut[np.minimum(values, len(self._lut) - 1)] < 0)
            ]
            if unmapped.size:
                raise ValueError(f"{where}: mask values {unmapped[:10].tolist()} not in value_map")
            mask = self._lut[mask]
        return {"image": image.astype(np.uint8), "mask": mask, "name": where}

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, split={self.split!r})"


@register("tfds")
def build(
    split: str,
    *,
    tfds_name: str = "",
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
    preset = PRESETS.get(tfds_name.split(":")[0], {})
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
            f"(presets: {', '.join(sorted(PRESETS))})"
        )
    if split == "test" and not chosen["test_split"]:
        raise ValueError(f"data.tfds_name={tfds_name!r} has no test split: set data.test_split")
    return TfdsSource(
        tfds_name,
        chosen[f"{split}_split"],
        data_dir=tfds_dir,
        image_key=chosen["image_key"],
        mask_key=chosen["mask_key"],
        class_names=chosen["class_names"],
        value_map=chosen["value_map"] or None,
        ignore_index=ignore_index,
    )
