"""Dataset registry: DATASETS maps a config name to a function building a split's source.

A source is grain-compatible (len and getitem) and yields
{"image": u8[H,W,C], "mask": u8 or i32[H,W]}; it has a `class_names` tuple.
"""

from __future__ import annotations

from jaxseg.data import shapes


def _shapes(split: str, *, image_size, num_examples: int, seed: int, **_unused):
    return shapes.ShapesSource(
        split, image_size=tuple(image_size), num_examples=num_examples, seed=seed
    )


DATASETS = {"shapes": _shapes}


def make_source(name: str, split: str, **options):
    """DATASETS[name](split, **options); an unknown name lists the valid ones."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](split, **options)
