"""Where the input pipeline's time goes: per-stage costs on one core, and test folders.

Each stage is timed alone, in the calling thread, on the same decoded examples, so its
images/s is a per-core figure (Pillow and numpy release the GIL, so threads and worker
processes add to it roughly per core). `python -m jaxseg.benchmark_input` prints
this table before the pipeline's images/s per worker count; benchmarks/input_pipeline.py
puts it beside albumentations.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time

import numpy as np
from PIL import Image

from jaxseg.data import pipeline, shapes, transforms


def write_folder(root: str, *, count: int, size: tuple[int, int], image_format: str = "JPEG"):
    """Renders `count` shapes scenes of size (H, W) into root/images (JPEG quality 90 or PNG)
    and root/masks (PNG class indices): a folder dataset with 5 classes, made here because
    no real dataset can be downloaded. Returns root."""
    suffix = {"JPEG": ".jpg", "PNG": ".png"}[image_format]
    source = shapes.ShapesSource("train", image_size=tuple(size), num_examples=count, seed=0)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    for i in range(count):
        example = source[i]
        Image.fromarray(example["image"]).save(
            os.path.join(root, "images", f"{i:04d}{suffix}"), image_format, quality=90
        )
        Image.fromarray(example["mask"].astype(np.uint8)).save(
            os.path.join(root, "masks", f"{i:04d}.png")
        )
    return root


def per_image_ms(fn, items, *, repeats: int = 3) -> float:
    """Median over `repeats` passes of the milliseconds per call of fn(item), items in order."""
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        passes.append((time.perf_counter() - start) * 1e3 / len(items))
    return statistics.median(passes)


def stage_costs(
    source,
    augment: dict,
    *,
    num_classes: int,
    ignore_index: int = 255,
    examples: int = 16,
    repeats: int = 3,
    seed: int = 0,
) -> list[tuple[str, float]]:
    """(stage, ms per image) for the training input of `source` on one core.

    augment: jaxseg.data.transforms.train_transform's keyword arguments (crop_size
    required). Stages: reading and decoding an example; checking its mask; the rescale and
    crop; flips; each optional augmentation alone (elastic at sigma 10 when off, blur
    always); the whole configured train transform; decode + train transform; and the
    device path's host work (decode and pad to a canvas the size of the largest example).
    """
    pipeline.keep_freed_memory()  # as the pipeline does on first use
    indices = [i % len(source) for i in range(examples)]
    decoded = [source[i] for i in indices]
    draws = itertools.count(len(indices))

    def rng(i=None):  # a fresh generator per call: every stage sees the spread of draws
        return np.random.default_rng([seed, next(draws) if i is None else i])

    def check(e):
        pipeline.check_mask(e["mask"], num_classes, ignore_index, "x")

    stages = [("decode", lambda i: source[i], indices), ("check mask", check, decoded)]
    stages += _augment_stages(decoded, augment, rng)
    transform = pipeline.TrainTransform(
        num_classes=num_classes, ignore_index=ignore_index, **augment
    )
    stages += _whole_stages(source, indices, decoded, transform, rng, ignore_index)
    return [(name, per_image_ms(fn, items, repeats=repeats)) for name, fn, items in stages]


def _augment_stages(decoded: list[dict], augment: dict, rng) -> list[tuple]:
    """(name, fn, items) of each augmentation alone: rescale + crop on the decoded examples,
    the others on crops of them."""
    crop = tuple(augment["crop_size"])
    scale_range = augment.get("scale_range")
    crops = [
        transforms.scaled_crop(e["image"], e["mask"], rng(i), crop, scale_range=scale_range)
        for i, e in enumerate(decoded)
    ]
    return [
        (
            "rescale + crop",
            lambda e: transforms.scaled_crop(
                e["image"], e["mask"], rng(), crop, scale_range=scale_range
            ),
            decoded,
        ),
        ("flip", lambda c: transforms.random_flip_rotate(*c, rng(), hflip=True), crops),
        (
            "elastic",
            lambda c: transforms.elastic(
                *c,
                rng(),
                sigma=augment.get("elastic_sigma") or 10.0,
                grid=augment.get("elastic_grid", 3),
            ),
            crops,
        ),
        ("photometric", lambda c: transforms.photometric(c[0], rng()), crops),
        ("blur", lambda c: transforms.gaussian_blur(c[0], rng(), prob=1.0), crops),
    ]


def _whole_stages(source, indices, decoded, transform, rng, ignore_index: int) -> list[tuple]:
    """(name, fn, items) of the whole train transform, with and without decoding, and of the
    device path's host work (decode, pad to a canvas the size of the largest example)."""
    canvas = tuple(np.max([e["mask"].shape for e in decoded], axis=0))

    def host_path(i):
        transform.random_map(source[i], rng(i))

    def device_path(i):
        e = source[i]
        pipeline.pad_to_size(e["image"], e["mask"], canvas, ignore_index)

    return [
        ("train transform", lambda e: transform.random_map(e, rng()), decoded),
        ("decode + train transform", host_path, indices),
        ("device path: decode + pad", device_path, indices),
    ]


def pipeline_images_per_s(iterator, *, batches: int, batch_size: int) -> float:
    """Images/s of a batch iterator over `batches` batches, after one warm-up batch (worker
    processes start, first reads). The iterator is closed (its threads, worker processes)."""
    try:
        next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        return batches * batch_size / (time.perf_counter() - start)
    finally:
        getattr(iterator, "close", lambda: None)()


def format_costs(costs: list[tuple[str, float]], title: str) -> str:
    """The stage costs as a table: ms per image and images/s on one core."""
    lines = [title, f"  {'stage':<28} {'ms/image':>9} {'images/s/core':>14}"]
    lines += [f"  {name:<28} {ms:>9.2f} {1e3 / ms:>14.1f}" for name, ms in costs]
    return "\n".join(lines)
