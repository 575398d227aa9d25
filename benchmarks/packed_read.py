"""Reading a dataset per CPU core: image folder vs its packed copy (jaxseg.pack), decode
included: source[i] as the training pipeline calls it (image and mask decoded, mask mapped
and checked for the folder; record read and decoded for the packed copy).

    PYTHONPATH=. python benchmarks/packed_read.py --out runs/packed_read [--jpegs 40] [--rounds 7]

Data: the membrane PNGs (512x512 greyscale; the 25 of the train split) and `--jpegs`
1024x2048 JPEGs (quality 90, shapes scenes rendered here, PNG masks; the 80 % of the train
split). The process is pinned to one core; the folder and
the packed copy take turns, round after round, so a change in the machine's load falls on
both. Each round reads every example once, in a seeded random order (as training does),
from a warm page cache. Prints a markdown table: median images/s over the rounds by wall
clock and by the process's CPU time (the second is steadier on a shared machine), and the
share of it spent fetching bytes (file reads vs record reads, no decode).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxseg import cli, input_throughput, pack, provenance  # noqa: E402
from jaxseg.data import make_source  # noqa: E402

SHAPES = "('background', 'circle', 'square', 'triangle', 'ring')"


def _timed(fn, order) -> tuple[float, float]:
    """(wall seconds, CPU seconds) per call of fn(i) over order."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in order:
        fn(i)
    n = len(order)
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def _fetch_folder(source):
    """Bytes only: the image and mask files of example i read whole."""

    def fetch(i):
        stem, image, mask = source._pairs[i]
        for path in (source.image_file(i), os.path.join(source._masks_path, mask)):
            with open(path, "rb") as f:
                f.read()

    return fetch


def measure(name: str, config_args: list[str], out: str, rounds: int) -> dict:
    config = cli.load_experiment(os.path.join(ROOT, "experiments", "unet.py"), *config_args)
    packed_root = os.path.join(out, f"{name}_packed")
    pack.pack(config, packed_root, progress=False)
    folder = pack.sources(config)["train"]
    copy = make_source("packed", "train", root=packed_root)
    contenders = {
        "folder": (folder.__getitem__, _fetch_folder(folder)),
        "packed": (copy.__getitem__, copy._records.__getitem__),
    }
    rng = np.random.default_rng(0)
    times = {k: {"read": [], "bytes": []} for k in contenders}
    for _ in contenders:  # warm the page cache and the decoders
        for fn, _ in contenders.values():
            _timed(fn, range(len(folder)))
    for _ in range(rounds):
        order = rng.permutation(len(folder))
        for key, (fn, fetch) in contenders.items():
            times[key]["read"].append(_timed(fn, order))
            times[key]["bytes"].append(_timed(fetch, order))
    rows = {}
    for key, t in times.items():
        rows[key] = {
            "wall": 1 / statistics.median(w for w, _ in t["read"]),
            "cpu": 1 / statistics.median(c for _, c in t["read"]),
            "bytes_share": statistics.median(w for w, _ in t["bytes"])
            / statistics.median(w for w, _ in t["read"]),
        }
    return {"name": name, "count": len(folder), "rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--jpegs", type=int, default=40)  # 32 in the train split
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    jpegs = os.path.join(args.out, "jpegs")
    if not os.path.isdir(jpegs):
        input_throughput.write_folder(jpegs, count=args.jpegs, size=(1024, 2048))
    results = [
        measure(
            "membrane 512x512 PNG",
            ["--config.data.name=membrane", "--config.data.image_size=(128, 128)"],
            args.out,
            args.rounds,
        ),
        measure(
            "shapes 1024x2048 JPEG",
            [
                "--config.data.name=folder",
                f"--config.data.root={jpegs}",
                f"--config.data.class_names={SHAPES}",
            ],
            args.out,
            args.rounds,
        ),
    ]
    stamp = provenance.stamp()
    print(f"{stamp['date']}; {stamp['versions']}; {args.rounds} rounds, 1 core")
    print("| data (train split) | images | reader | images/s (wall) | images/s (CPU) "
          "| bytes fetch share |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in results:
        for key, row in r["rows"].items():
            print(
                f"| {r['name']} | {r['count']} | {key} | {row['wall']:.1f} | {row['cpu']:.1f} "
                f"| {100 * row['bytes_share']:.1f} % |"
            )


if __name__ == "__main__":
    main()
