"""Input pipeline throughput: where the host's time goes per stage on one core, then the
training pipeline's images/s per grain worker count.

    python -m jaxseg.benchmark_input --config experiments/unet_membrane.py \
        --config.data.image_size="(512, 512)" --workers=0,1,2 --batches=20

The training split and augmentation of the config (--config.* overrides apply; --batch and
--size are shorthands for --config.batch_size and --config.data.image_size). Per worker
count: after one warm-up batch, the median of --repeats timings of --batches batches. A JSON
line only with --results. No model, no device: the step's own throughput is
`python -m jaxseg.benchmark`.
"""

from __future__ import annotations

import os
import statistics
import sys

from absl import flags

from jaxseg import cli, configs, input_throughput, recipe, sharding
from jaxseg.benchmark_steps import append_record, apply_size_flags, define_size_flags

PROG = "jaxseg.benchmark_input"


def worker_rates(config, source, workers: list[int], *, batches: int, repeats: int) -> dict:
    """{workers: images/s of the training pipeline}, printed as a table while measured."""
    height, width = config.data.image_size
    print(f"input pipeline: {config.data.name}, crops {height}x{width}, batch {config.batch_size}")
    print(f"{'workers':>8}  {'images/s':>10}")
    rates = {}
    for num_workers in workers:
        runs = [
            input_throughput.pipeline_images_per_s(
                recipe.train_iterator(config, source, config.batch_size, num_workers=num_workers),
                batches=batches,
                batch_size=config.batch_size,
            )
            for _ in range(repeats)
        ]
        rates[num_workers] = statistics.median(runs)
        print(f"{num_workers:>8}  {rates[num_workers]:>10.1f}", flush=True)
    return rates


def benchmark_input(config, workers: list[int], *, batches: int, repeats: int) -> dict:
    """Prints the per-stage costs and the images/s per worker count; returns the record."""
    height, width = config.data.image_size
    source = recipe.make_source(config, "train")
    costs = input_throughput.stage_costs(
        source,
        recipe.augment_options(config),
        num_classes=len(source.class_names),
        ignore_index=config.data.ignore_index,
        repeats=repeats,
    )
    title = f"one core, {config.data.name}, {height}x{width}:"
    print(input_throughput.format_costs(costs, title))
    rates = worker_rates(config, source, workers, batches=batches, repeats=repeats)
    return {
        "framework": "jaxseg",
        "data_only": True,
        "dataset": config.data.name,
        "size": [height, width],
        "batch": config.batch_size,
        "batches": batches,
        "repeats": repeats,
        "images_per_s": {str(w): r for w, r in rates.items()},
        "ms_per_image_one_core": dict(costs),
        "host_cpus": os.cpu_count(),
        "host_load_1m": os.getloadavg()[0],
    }


def _flags(argv) -> flags.FlagValues:
    fv = flags.FlagValues()
    define = dict(flag_values=fv)
    define_size_flags(fv)
    flags.DEFINE_list("workers", ["0", "1", "2"], "grain worker counts", **define)
    flags.DEFINE_integer("batches", 20, "batches timed", lower_bound=1, **define)
    flags.DEFINE_integer("repeats", 1, "timings (median)", lower_bound=1, **define)
    flags.DEFINE_string("results", None, "JSON-lines file to append the record to", **define)
    return fv


def main(argv=None) -> dict:
    """Runs the command line; returns the record."""
    argv = sys.argv[1:] if argv is None else list(argv)
    fv = _flags(argv)
    cli.parse_flags(fv, argv, prog=PROG, doc=__doc__)
    config = fv.config
    try:
        workers = [int(w) for w in fv.workers]
        apply_size_flags(config, fv)
    except (configs.ConfigError, ValueError) as e:
        cli.fail(PROG, str(e))
    sharding.initialize_distributed()
    flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags
    record = benchmark_input(config, workers, batches=fv.batches, repeats=fv.repeats)
    if fv.results:  # only when asked: the table above is the usual answer
        append_record(record, PROG, argv, fv.results)
    return record


if __name__ == "__main__":
    cli.run(main)
