"""grain input pipelines: a checkpointable training stream and padded evaluation batches.

Training: source -> shard by process -> shuffle (a new order every epoch) -> repeat ->
per-example transforms seeded by (seed, position) -> batch(drop_remainder). The
iterator's state is a small dict saved with every checkpoint, so a resumed run reads
the very batches an uninterrupted one would.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
from collections.abc import Iterator

import grain
import jax
import numpy as np

from jaxseg.data import transforms
from jaxseg.data.augment_spec import AugmentSpec

log = logging.getLogger(__name__)


# glibc's mallopt parameters (malloc.h) and the values keep_freed_memory sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_BYTES, _MMAP_BYTES = 128 << 20, 32 << 20
_MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


@functools.cache
def keep_freed_memory() -> bool:
    """Lets glibc's malloc keep freed memory for the next example instead of handing it back
    to the kernel; once per process (the pipeline calls it on first use, so grain's worker
    processes do too). Returns whether it acted.

    Every example allocates and frees arrays of a few megabytes (decoded image, crop,
    float planes of the hue step). With glibc's defaults they come from fresh mmaps or a
    trimmed heap and are faulted in page by page each time: ~4500 page faults per
    1024x2048 example, a third of the host path's time (docs/benchmarks.md). Blocks up to
    32 MB now come from the heap and up to 128 MB of freed heap is kept, which leaves
    about 7 faults per example and the peak memory as it was. Nothing is done off glibc,
    or when the user set glibc's MALLOC_* variables themselves."""
    if any(name in os.environ for name in _MALLOC_ENV) or "malloc" in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
        return False
    return (
        mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES) == 1
        and mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES) == 1
    )


def distinct_values(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values; bincount is O(n) where np.unique would sort every pixel."""
    if a.dtype in (np.uint8, np.uint16):
        return np.flatnonzero(np.bincount(a.ravel(), minlength=1))
    return np.unique(a)


def bad_values(mask: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """The distinct values of mask that are neither a class in [0, K) nor ignore_index;
    two comparisons over the pixels, and a sort only of the offending ones."""
    over = (mask >= num_classes) & (mask != ignore_index)
    if mask.dtype.kind != "u":
        over |= mask < 0
    if not over.any():
        return np.zeros(0, mask.dtype)
    return distinct_values(mask[over])


def check_mask(
    mask: np.ndarray, num_classes: int, ignore_index: int, where: str, to_ignore: bool = False
) -> np.ndarray:
    """The mask, if every value is a class or ignore_index; otherwise an error naming `where`
    and the offending values, or (to_ignore) those pixels set to ignore_index."""
    bad = bad_values(mask, num_classes, ignore_index)
    if not bad.size:
        return mask
    if to_ignore:
        return np.where(np.isin(mask, bad), ignore_index, mask).astype(np.int32)
    raise ValueError(
        f"{where}: mask values {bad[:10].tolist()} are outside [0, {num_classes}) "
        f"and not ignore_index={ignore_index} (data.invalid_to_ignore=True maps them to ignore)"
    )


def signed_distance(mask: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Signed Euclidean distance to each class's region, f32[H,W,K], for the boundary loss.

    Negative inside the region (0 on its border pixels), positive outside; all zeros for a
    class absent from (or covering all of) the mask, and 0 at ignored pixels. mask: int[H,W].
    """
    from scipy import ndimage  # a jax dependency; only loaded when the boundary loss is on

    out = np.zeros((*mask.shape, num_classes), np.float32)
    for k in range(num_classes):
        inside = mask == k
        if inside.any() and not inside.all():
            outside = ~inside
            out[..., k] = (
                ndimage.distance_transform_edt(outside) * outside
                - (ndimage.distance_transform_edt(inside) - 1) * inside
            )
    out[mask == ignore_index] = 0
    return out


def pad_to_size(image, mask, size: tuple[int, int], ignore_index: int, where: str = "example"):
    """Pads image with 0 and mask with ignore_index at the bottom/right to size (H, W)."""
    height, width = mask.shape
    pad_h, pad_w = size[0] - height, size[1] - width
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"{where}: {height}x{width} is larger than the padded size {size}")
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
        mask = np.pad(mask, ((0, pad_h), (0, pad_w)), constant_values=ignore_index)
    return image, mask


class TrainTransform(grain.transforms.RandomMap):
    """The joint training augmentations of jaxseg.data.transforms.train_transform, then the
    boundary loss's distance maps when asked. The mask is checked before anything moves.
    augment: AugmentSpec's fields (crop_size required; ignore_index is the argument's)."""

    def __init__(
        self,
        *,
        num_classes: int,
        ignore_index: int,
        distance_maps: bool = False,
        invalid_to_ignore: bool = False,
        **augment,
    ):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.distance_maps, self.invalid_to_ignore = distance_maps, invalid_to_ignore
        self.spec = AugmentSpec(ignore_index=ignore_index, **augment)

    def random_map(self, example: dict, rng: np.random.Generator) -> dict:
        keep_freed_memory()
        where, mask = example.get("name", "example"), example["mask"]
        if self.invalid_to_ignore:  # mapped before the crop, which counts classes
            mask = check_mask(mask, self.num_classes, self.ignore_index, where, True)
        image, mask = transforms.train_transform(example["image"], mask, rng, self.spec)
        # Checking the crop (a quarter of a 1024x2048 mask) rather than the whole mask finds
        # every value that reaches the loss; transforms only move values or pad with
        # ignore_index.
        mask = check_mask(mask, self.num_classes, self.ignore_index, where)
        out = {"image": image, "mask": mask}
        if self.distance_maps:  # on the host, after the geometry transforms
            out["distance"] = signed_distance(mask, self.num_classes, self.ignore_index)
        return out


class CanvasPrep(grain.transforms.Map):
    """augment_on="device": the host's share of the work. The mask is checked, image and mask
    are padded at the bottom/right to a fixed canvas (image 0, mask ignore_index), and the
    example's own size is kept; jaxseg.augment does the rest inside the train step. An
    example larger than the canvas is shrunk to fit it, aspect kept (logged once)."""

    def __init__(
        self, *, canvas, num_classes: int, ignore_index: int, invalid_to_ignore: bool = False
    ):
        self.canvas, self.num_classes = tuple(int(v) for v in canvas), num_classes
        self.ignore_index, self.invalid_to_ignore = ignore_index, invalid_to_ignore
        self._warned = False

    def map(self, example: dict) -> dict:
        keep_freed_memory()
        where = example.get("name", "example")
        mask = check_mask(
            example["mask"], self.num_classes, self.ignore_index, where, self.invalid_to_ignore
        )
        image = example["image"]
        height, width = mask.shape
        if height > self.canvas[0] or width > self.canvas[1]:
            fit = min(self.canvas[0] / height, self.canvas[1] / width)
            size = (max(1, int(height * fit)), max(1, int(width * fit)))
            if not self._warned:
                log.warning(
                    "%s: %dx%d is larger than augment.canvas_size %s; shrunk to %dx%d (and so "
                    "is any other such example; raise augment.canvas_size to keep them whole)",
                    where,
                    height,
                    width,
                    self.canvas,
                    *size,
                )
                self._warned = True
            image, mask = transforms.resize(image, mask, size)
        size = np.asarray(mask.shape, np.int32)
        image, mask = pad_to_size(image, mask, self.canvas, self.ignore_index, where)
        return {"image": image, "mask": mask, "size": size}


class _Lookup:
    """source[i] as a grain map over drawn indices (picklable for worker processes)."""

    def __init__(self, source):
        self.source = source

    def __call__(self, index):
        return self.source[int(index)]


class _BalancedDraw:
    """Position p of the stream -> an example index drawn with the given probabilities:
    epoch p // n draws n indices with numpy's generator seeded (seed, epoch), so any position
    is a pure function of (seed, p), which is what the iterator's saved state resumes from."""

    def __init__(self, probabilities: np.ndarray, seed: int):
        self.probabilities = np.asarray(probabilities, np.float64)
        self.seed, self._epochs = seed, {}

    def __call__(self, position: int, _):
        epoch, offset = divmod(int(position), len(self.probabilities))
        if epoch not in self._epochs:
            if len(self._epochs) > 2:  # keep the current epoch and its neighbour
                self._epochs.pop(min(self._epochs))
            rng = np.random.default_rng([self.seed, epoch])
            n = len(self.probabilities)
            self._epochs[epoch] = rng.choice(n, size=n, p=self.probabilities)
        return int(self._epochs[epoch][offset])


def train_iterator(
    source,
    *,
    batch_size: int,
    seed: int,
    num_classes: int,
    ignore_index: int = 255,
    distance_maps: bool = False,
    invalid_to_ignore: bool = False,
    num_workers: int = 0,
    read_threads: int = 4,
    prefetch: int = 2,
    augment_on: str = "host",
    canvas_size=None,
    sample_probabilities=None,
    **augment,
) -> grain.DatasetIterator:
    """Endless per-process batches.

    augment_on "host": {"image": u8[b,H,W,C], "mask": i32[b,H,W]} augmented here (plus
    "distance": f32[b,H,W,K], signed_distance, when distance_maps is set); augment: the
    fields of jaxseg.data.augment_spec.AugmentSpec (crop_size required).
    augment_on "device": {"image": u8[b,Hc,Wc,C], "mask": u8/i32[b,Hc,Wc], "size": i32[b,2]}
    padded to canvas_size (Hc, Wc) for jaxseg.augment; augment is unused here.

    batch_size is this process's share of the global batch. Examples come in a new shuffled
    order every epoch, or, with sample_probabilities (f64[n] over this process's examples,
    see sampling_probabilities), drawn independently with those probabilities. The iterator
    supports get_state()/set_state() (saved in checkpoints by jaxseg.checkpoint).
    """
    dataset = grain.MapDataset.source(source)
    # Shard by process before shuffling: each process owns a fixed, disjoint slice.
    dataset = dataset[jax.process_index() :: jax.process_count()]
    if len(dataset) < batch_size:
        raise ValueError(
            f"{source!r}: {len(dataset)} training examples on this process, "
            f"fewer than one batch of {batch_size}"
        )
    if sample_probabilities is not None:
        if len(sample_probabilities) != len(dataset):
            raise ValueError(
                f"{len(sample_probabilities)} sampling probabilities for {len(dataset)} examples"
            )
        draws = grain.MapDataset.range(len(dataset)).repeat()
        dataset = draws.map_with_index(_BalancedDraw(sample_probabilities, seed)).map(
            _Lookup(dataset)
        )
    else:
        dataset = dataset.shuffle(seed=seed).repeat()
    if augment_on == "device":
        if distance_maps:
            raise ValueError("the boundary loss's distance maps need augment.backend='host'")
        dataset = dataset.map(
            CanvasPrep(
                canvas=canvas_size,
                num_classes=num_classes,
                ignore_index=ignore_index,
                invalid_to_ignore=invalid_to_ignore,
            )
        )
    elif augment_on == "host":
        transform = TrainTransform(
            num_classes=num_classes,
            ignore_index=ignore_index,
            distance_maps=distance_maps,
            invalid_to_ignore=invalid_to_ignore,
            **augment,
        )
        dataset = dataset.random_map(transform, seed=seed + 1)
    else:
        raise ValueError(f"unknown augment_on {augment_on!r}; valid: host, device")
    dataset = dataset.batch(batch_size, drop_remainder=True)
    read = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=read_threads)
    iter_dataset = dataset.to_iter_dataset(read)
    if num_workers > 0:
        iter_dataset = iter_dataset.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=prefetch)
        )
    return iter(iter_dataset)


def sampling_probabilities(image_classes: np.ndarray, image_share: np.ndarray, threshold: float):
    """Class-balanced sampling (LVIS's repeat factors, Gupta et al. 2019), as probabilities.

    image_classes: bool[n,K], the classes each of this process's examples holds;
    image_share: f64[K], the share of all training examples holding each class (over every
    process). A class c gets r_c = max(1, sqrt(threshold / share_c)), an example the largest
    r_c of its classes (1 for none), and the probabilities are those factors normalised:
    f64[n]. Classes in fewer than a `threshold` share of the examples are drawn more often.
    """
    share = np.asarray(image_share, np.float64)
    factor = np.where(share > 0, np.sqrt(threshold / np.maximum(share, 1e-300)), 1.0)
    factor = np.maximum(factor, 1.0)
    per_image = np.where(image_classes, factor[None, :], 1.0).max(axis=1)
    return per_image / per_image.sum()


class EvalPrep(grain.transforms.Map):
    """One evaluation example, by index (-1: a padding example): resized so its shorter side
    is shorter_side (0 keeps it), its mask checked, padded to pad_to, with "valid" and its
    own "size"."""

    def __init__(self, source, *, pad_to, num_classes, ignore_index, shorter_side, to_ignore):
        self.source, self.pad_to, self.num_classes = source, tuple(pad_to), num_classes
        self.ignore_index, self.shorter_side, self.to_ignore = (
            ignore_index,
            shorter_side,
            to_ignore,
        )
        self._blank = None

    def map(self, index):
        keep_freed_memory()
        index = int(index)
        if index < 0:
            if self._blank is None:  # the padding takes the data's channel count and dtype
                first = self.source[0]["image"]
                self._blank = np.zeros((*self.pad_to, first.shape[-1]), first.dtype)
            return {
                "image": self._blank,
                "mask": np.full(self.pad_to, self.ignore_index, np.int32),
                "valid": False,
                "size": np.asarray(self.pad_to, np.int32),
            }
        example = self.source[index]
        where = example.get("name", f"example {index}")
        image, mask = example["image"], example["mask"]
        if self.shorter_side:
            image, mask = transforms.resize_shorter_side(image, mask, self.shorter_side)
        mask = check_mask(mask, self.num_classes, self.ignore_index, where, self.to_ignore)
        size = np.asarray(mask.shape, np.int32)
        image, mask = pad_to_size(
            image,
            mask.astype(np.int32),
            self.pad_to,
            self.ignore_index,
            where + " (raise eval.size)",
        )
        return {"image": image, "mask": mask, "valid": True, "size": size}


def eval_batches(
    source,
    *,
    batch_size: int,
    pad_to: tuple[int, int],
    num_classes: int,
    ignore_index: int = 255,
    shorter_side: int = 0,
    invalid_to_ignore: bool = False,
    read_threads: int = 4,
) -> Iterator[dict]:
    """Every example exactly once across processes, in fixed-shape padded batches.

    batch_size is this process's share of the global batch. Each example is resized so its
    shorter side is shorter_side (0 keeps its own size), its mask checked, and it is padded
    to pad_to (H, W) (image 0, mask ignore_index). Yields {"image": u8[b,H,W,C],
    "mask": i32[b,H,W], "valid": bool[b], "size": i32[b,2]} (each example's own height and
    width before padding); padding examples are zeros with valid False and size pad_to.
    Every process yields the same number of batches, so global arrays can be assembled.
    Examples are read and prepared by `read_threads` threads, batches ahead of the consumer
    (grain), so the device does not wait on the host while it is busier than the host.
    """
    count, index, processes = len(source), jax.process_index(), jax.process_count()
    mine = list(range(index, count, processes))
    num_batches = math.ceil(math.ceil(count / processes) / batch_size)
    indices = mine + [-1] * (num_batches * batch_size - len(mine))
    prep = EvalPrep(
        source,
        pad_to=pad_to,
        num_classes=num_classes,
        ignore_index=ignore_index,
        shorter_side=shorter_side,
        to_ignore=invalid_to_ignore,
    )
    dataset = grain.MapDataset.source(indices).map(prep).batch(batch_size)
    threads = max(1, read_threads)
    read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
    return iter(dataset.to_iter_dataset(read))
