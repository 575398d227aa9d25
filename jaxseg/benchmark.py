"""Benchmarks. For now the input pipeline alone: decoded and augmented images per second.

    python -m jaxseg.benchmark --data-only --config experiments/unet_membrane.py \
        --config.data.image_size="(512, 512)" --workers=0,1,2 --batches=20

Each worker count builds the real training pipeline of the config (source, transforms,
grain workers, batching), skips one warm-up batch (worker start-up), then times
`--batches` batches. The table gives images/s per worker count; the median of
`--repeats` timings when asked for more than one.
"""

from __future__ import annotations

import statistics
import sys
import time

from jaxseg import configs
from jaxseg.data import make_source
from jaxseg.data.pipeline import train_iterator


def data_throughput(config, *, num_workers: int, batches: int, batch_size: int) -> float:
    """Images/s of the training pipeline with num_workers grain worker processes."""
    data = config.data
    options = {k: v for k, v in data.items() if k != "name"} | {"seed": config.seed}
    source = make_source(data.name, "train", **options)
    iterator = train_iterator(
        source,
        batch_size=batch_size,
        seed=config.seed,
        num_classes=len(source.class_names),
        ignore_index=data.ignore_index,
        **configs.augment_options(data),
        num_workers=num_workers,
        read_threads=data.read_threads,
        prefetch=data.prefetch,
    )
    next(iterator)  # warm-up: worker processes start, first reads
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = configs.parse_args(argv)
        extra = dict(a.lstrip("-").partition("=")[::2] for a in args.extra)
        if "data-only" not in extra:
            raise configs.ConfigError("only --data-only is implemented so far")
        unknown = set(extra) - {"data-only", "workers", "batches", "repeats"}
        if unknown:
            raise configs.ConfigError(f"unknown argument(s) {sorted(unknown)}")
        workers = [int(w) for w in extra.get("workers", "0,1,2").split(",")]
        batches, repeats = int(extra.get("batches", 20)), int(extra.get("repeats", 1))
    except (configs.ConfigError, ValueError) as e:
        print(f"jaxseg.benchmark: error: {e}", file=sys.stderr)
        sys.exit(2)
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags
    config = args.config
    height, width = config.data.image_size
    print(f"input pipeline: {config.data.name}, crops {height}x{width}, batch {config.batch_size}")
    print(f"{'workers':>8}  {'images/s':>10}")
    for num_workers in workers:
        rates = [
            data_throughput(
                config, num_workers=num_workers, batches=batches, batch_size=config.batch_size
            )
            for _ in range(repeats)
        ]
        print(f"{num_workers:>8}  {statistics.median(rates):>10.1f}", flush=True)


if __name__ == "__main__":
    main()
