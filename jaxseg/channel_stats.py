"""Per-channel mean and std of a training set's images, one pass, cached in the workdir (as
the class weights are, jaxseg.class_weights): what normalises data whose bands are not RGB
(data.mean = data.std = (), or data.channels other than 3 left at the RGB defaults).

Both are of the images scaled to [0, 1] as the train step scales them (x / 255 for u8,
x / 65535 for u16: jaxseg.inference.normalize), over every pixel of every image: the
population std, sqrt(E[x^2] - E[x]^2). The sums are exact integers (Python ints, summed
over processes in 32-bit halves), so every process and every rerun gets the same figures.
"""

from __future__ import annotations

import json
import math

import jax
import numpy as np

from jaxseg import sharding, writer
from jaxseg import workdir as run_files
from jaxseg.class_weights import _Subset

CACHE_NAME = "channel_stats.json"
SCALES = {"uint8": 255, "uint16": 65535}


def channel_sums(source, channels: int, *, progress: bool = True) -> tuple[str, list[list[int]]]:
    """(the images' dtype name, None for no image; [[pixels] * C, sum of x per channel, sum
    of x^2 per channel]) over source[i]["image"] (u8 or u16[H,W,channels], one dtype for
    all), as Python ints. ValueError naming the example for another channel count or dtype."""
    dtype, pixels = None, 0
    sums, squares = [0] * channels, [0] * channels
    for i in writer.Bar(range(len(source)), desc="channel statistics", disable=not progress):
        example = source[i]
        image, where = np.asarray(example["image"]), example.get("name", f"example {i}")
        if image.ndim != 3 or image.shape[-1] != channels or image.dtype.name not in SCALES:
            raise ValueError(
                f"{where}: image {image.dtype.name}{list(image.shape)}; the channel statistics "
                f"take u8 or u16[H,W,{channels}] (data.channels={channels})"
            )
        if dtype is None:
            dtype = image.dtype.name
        elif image.dtype.name != dtype:  # the step scales a batch by one dtype's range
            raise ValueError(
                f"{where}: a {image.dtype.name} image among {dtype} ones; store every image of "
                "the dataset at one bit depth"
            )
        flat = image.reshape(-1, channels).astype(np.int64)
        pixels += flat.shape[0]
        # Per image, the sums fit int64 (65535^2 x 89 M pixels < 2^63); across images, ints.
        for c, (s, q) in enumerate(zip(flat.sum(0), (flat * flat).sum(0), strict=True)):
            sums[c] += int(s)
            squares[c] += int(q)
    return dtype, [[pixels] * channels, sums, squares]


def _sum_ints_over_processes(values: list[list[int]]) -> list[list[int]]:
    """Non-negative Python ints (below 2^94) summed exactly over every process."""
    halves = [[[v >> 32, v & (2**32 - 1)] for v in row] for row in values]
    summed = sharding.sum_over_processes(np.asarray(halves, np.int64))
    return [[(int(h) << 32) + int(lo) for h, lo in row] for row in summed]


def _common_dtype(dtype: str | None) -> str:
    """The one dtype of every process's images (each passes its own; None: it read none)."""
    seen = sharding.sum_over_processes(np.asarray([dtype == name for name in SCALES], np.int64))
    names = [name for name, count in zip(SCALES, seen, strict=True) if count]
    if len(names) > 1:
        raise ValueError(
            "the training images mix bit depths (uint8 and uint16); store every image of the "
            "dataset at one bit depth"
        )
    return names[0] if names else "uint8"


def stats_from_sums(dtype: str, sums: list[list[int]]) -> tuple[tuple, tuple]:
    """(mean, std) per channel, floats, of images scaled by SCALES[dtype], from channel_sums'
    exact sums."""
    scale = SCALES[dtype]
    mean, std = [], []
    for n, s, q in zip(*sums, strict=True):
        n = max(n, 1)
        mean.append(s / (n * scale))
        std.append(math.sqrt(max(n * q - s * s, 0)) / (n * scale))  # n q - s^2: exact
    return tuple(mean), tuple(std)


def channel_stats(
    source, channels: int, *, workdir: str | None, progress: bool = True
) -> tuple[tuple, tuple]:
    """(mean, std), each C floats, of `source`'s images, cached in <workdir>/channel_stats.json.

    The cache holds {"channels", "source": repr(source), "dtype", "mean", "std", "pixels"}
    and is reused while channels and repr(source) match (a source's repr names everything
    that changes its images); otherwise the pass runs again and overwrites it. On several
    processes each reads its share of the examples, the sums are added exactly, and process
    0 alone writes the cache. No workdir: no cache.
    """
    key = {"channels": int(channels), "source": repr(source)}
    path = None if workdir is None else run_files.path(workdir, CACHE_NAME)
    try:
        cached = None if path is None else json.loads(path.read_text())
    except (OSError, ValueError):
        cached = None
    found = None
    if isinstance(cached, dict) and all(cached.get(k) == v for k, v in key.items()):
        mean, std = cached.get("mean", ()), cached.get("std", ())
        if len(mean) == len(std) == channels:
            found = tuple(map(float, mean)), tuple(map(float, std))
    # The pass is a collective: read when any process lacks the cache.
    if not sharding.any_process(found is None):
        return found
    index, processes = jax.process_index(), jax.process_count()
    share = _Subset(source, range(index, len(source), processes))
    dtype, sums = channel_sums(share, channels, progress=progress)
    dtype, sums = _common_dtype(dtype), _sum_ints_over_processes(sums)
    mean, std = stats_from_sums(dtype, sums)
    if index == 0 and path is not None:
        record = {**key, "dtype": dtype, "mean": mean, "std": std, "pixels": sums[0][0]}
        path.parent.mkdir(parents=True, exist_ok=True)
        run_files.write_text_atomic(path, json.dumps(record, indent=1))
    return mean, std
