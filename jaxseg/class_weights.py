"""Per-class loss weights from a training set's label statistics, one pass, cached in the workdir.

Three schemes (K classes, counts over non-ignored pixels only):

- "inverse": w_k = N / (K * n_k), N = sum_k n_k; a class with the average pixel share gets 1.
- "median": median-frequency balancing (Eigen & Fergus 2015): f_k = n_k / P_k, where P_k is the
  number of labelled pixels in the images that contain class k; w_k = median(f) / f_k.
- "enet": w_k = 1 / ln(1.02 + n_k / N) (Paszke et al. 2016); weights lie in (0, ~50].

A class never seen in the training set gets weight 0: it contributes no loss anyway, and 0 keeps
NaN and inf out of the loss; the median of "median" is taken over seen classes only.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from jaxseg import sharding, writer
from jaxseg import workdir as run_files

METHODS = ("inverse", "median", "enet")
ENET_C = 1.02
CACHE_NAME = "class_weights.json"


def count_classes(
    source, num_classes: int, *, ignore_index: int = 255, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over `source[i]["mask"]`: class_frequencies' counts, and which classes each
    example holds (bool[N,K], what class-balanced sampling reads)."""
    pixel_counts = np.zeros(num_classes, np.int64)
    present_pixels = np.zeros(num_classes, np.int64)
    image_classes = np.zeros((len(source), num_classes), bool)
    for i in writer.Bar(range(len(source)), desc="class frequencies", disable=not progress):
        mask = np.asarray(source[i]["mask"]).ravel()
        labels = mask[mask != ignore_index].astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            bad = labels[(labels < 0) | (labels >= num_classes)][0]
            raise ValueError(
                f"example {i}: label {bad} outside [0, {num_classes}) and not "
                f"ignore_index={ignore_index}"
            )
        counts = np.bincount(labels, minlength=num_classes)
        pixel_counts += counts
        present_pixels[counts > 0] += labels.size
        image_classes[i] = counts > 0
    return pixel_counts, present_pixels, image_classes


def class_frequencies(
    source, num_classes: int, *, ignore_index: int = 255, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Counts labelled pixels per class in one pass over `source[i]["mask"]`.

    Args:
      source: len() and source[i] -> {"mask": u8 or i32[H,W], ...}; images may differ in size.
      num_classes: K; every label other than ignore_index must lie in [0, K).
      ignore_index: label of unlabelled pixels; they are not counted anywhere.
      progress: show a tqdm progress bar.

    Returns:
      (pixel_counts, present_pixels), both i64[K]: pixel_counts[k] is the number of pixels of
      class k; present_pixels[k] is the number of labelled pixels summed over the images in which
      class k appears (the denominator of median-frequency balancing; a count of images alone is
      not enough when image sizes or ignored areas differ).

    Raises:
      ValueError: a label outside [0, K) that is not ignore_index.
    """
    counts = count_classes(source, num_classes, ignore_index=ignore_index, progress=progress)
    return counts[0], counts[1]


def compute_weights(pixel_counts, present_pixels, method: str) -> np.ndarray:
    """Class weights from class_frequencies' counts.

    Args:
      pixel_counts: int[K], labelled pixels per class.
      present_pixels: int[K], labelled pixels of the images containing each class (only
        "median" reads it).
      method: one of METHODS.

    Returns:
      f32[K]; 0 for classes with pixel_counts == 0, finite and positive elsewhere.

    Raises:
      ValueError: unknown method (the message lists METHODS).
    """
    if method not in METHODS:
        raise ValueError(f"unknown class-weight method {method!r}; valid: {', '.join(METHODS)}")
    n = np.asarray(pixel_counts, np.float64)
    seen = n > 0
    weights = np.zeros(n.shape, np.float64)
    if not seen.any():
        return weights.astype(np.float32)
    total = n.sum()
    if method == "inverse":
        weights[seen] = total / (n.size * n[seen])
    elif method == "median":
        present = np.asarray(present_pixels, np.float64)
        freq = n[seen] / present[seen]  # present >= n > 0 wherever seen
        weights[seen] = np.median(freq) / freq
    else:  # enet
        weights[seen] = 1.0 / np.log(ENET_C + n[seen] / total)
    return weights.astype(np.float32)


class _Subset:
    """source[indices[i]] as item i (this process's share of a source)."""

    def __init__(self, source, indices):
        self.source, self.indices = source, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.source[self.indices[i]]


def class_weights(
    source,
    num_classes: int,
    method: str,
    *,
    workdir: str,
    ignore_index: int = 255,
    progress: bool = True,
) -> np.ndarray:
    """Class weights for `source`, cached in <workdir>/class_weights.json.

    The cache holds {"method", "num_classes", "ignore_index", "source": repr(source), "weights",
    "pixel_counts", "present_pixels"}. It is reused when method, num_classes, ignore_index and
    repr(source) all match (so a source's repr must name everything that changes its masks);
    otherwise the counts are taken again and the file is overwritten. On several processes
    each counts its share of the examples, the counts are summed exactly, and process 0
    alone writes the cache.

    Returns:
      f32[K], see compute_weights.
    """
    if method not in METHODS:  # before a possibly long pass over the data
        raise ValueError(f"unknown class-weight method {method!r}; valid: {', '.join(METHODS)}")
    key = {
        "method": method,
        "num_classes": int(num_classes),
        "ignore_index": int(ignore_index),
        "source": repr(source),
    }
    path = run_files.path(workdir, CACHE_NAME)
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = None
    weights = None
    if isinstance(cached, dict) and all(cached.get(k) == v for k, v in key.items()):
        weights = np.asarray(cached.get("weights", ()), np.float32)
        if weights.shape != (num_classes,):
            weights = None
    # Counting is a collective: count when any process lacks the cache (a file system not
    # shared by every host), each process its share of the examples, summed exactly.
    if not sharding.any_process(weights is None):
        return weights
    index, processes = jax.process_index(), jax.process_count()
    share = _Subset(source, range(index, len(source), processes))
    counts = class_frequencies(share, num_classes, ignore_index=ignore_index, progress=progress)
    pixel_counts, present_pixels = sharding.sum_over_processes(np.stack(counts))
    weights = compute_weights(pixel_counts, present_pixels, method)
    if index != 0:  # one writer
        return weights
    record = {
        **key,
        "weights": [float(w) for w in weights],
        "pixel_counts": [int(c) for c in pixel_counts],
        "present_pixels": [int(c) for c in present_pixels],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    run_files.write_text_atomic(path, json.dumps(record, indent=1))
    return weights


PRESENCE_NAME = "class_presence.p{index}of{count}.json"


def image_classes(
    source,
    num_classes: int,
    *,
    workdir: str | None,
    ignore_index: int = 255,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Which classes each of this process's examples holds, and the share of all training
    examples (every process) holding each class, for class-balanced sampling.

    This process's examples are source[process_index::process_count], as the training
    iterator shards them. The rows are counted by count_classes and cached per process in
    <workdir>/class_presence.p<i>of<n>.json (reused while num_classes, ignore_index and
    repr(source) match; no workdir: no cache); the shares are summed over processes exactly.

    Returns:
      (bool[n,K] for this process's n examples, f64[K]).
    """
    index, processes = jax.process_index(), jax.process_count()
    key = {
        "num_classes": int(num_classes),
        "ignore_index": int(ignore_index),
        "source": repr(source),
    }
    name = PRESENCE_NAME.format(index=index, count=processes)
    path = None if workdir is None else run_files.path(workdir, name)
    share = _Subset(source, range(index, len(source), processes))
    try:
        cached = None if path is None else json.loads(path.read_text())
    except (OSError, ValueError):
        cached = None
    rows = None
    if isinstance(cached, dict) and all(cached.get(k) == v for k, v in key.items()):
        listed = cached.get("classes", ())
        if len(listed) == len(share):
            rows = np.zeros((len(share), num_classes), bool)
            for i, classes in enumerate(listed):
                rows[i, classes] = True
    if rows is None:
        rows = count_classes(share, num_classes, ignore_index=ignore_index, progress=progress)[2]
        if path is not None:
            record = {**key, "classes": [np.flatnonzero(r).tolist() for r in rows]}
            path.parent.mkdir(parents=True, exist_ok=True)
            run_files.write_text_atomic(path, json.dumps(record))
    totals = sharding.sum_over_processes(
        np.concatenate([rows.sum(0), [len(share)]]).astype(np.int64)
    )
    return rows, totals[:-1] / max(int(totals[-1]), 1)
