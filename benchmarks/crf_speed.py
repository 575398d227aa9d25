"""How long jaxseg's dense CRF (jaxseg.crf.mean_field) takes per image on whatever device
jax has, in its two formulations of each iteration's message sum.

    python benchmarks/crf_speed.py --size 512 --classes 21 --batch 1 8 --windows 5 11

`scan` (unroll=False) sums the window's offsets with a `lax.scan`, one neighbour map alive
at a time; `unrolled` (unroll=True) writes the sum as a Python loop, which XLA can fuse
into one kernel per iteration at the price of a program `window^2` times longer. Both give
the same probabilities (tests/test_crf_speed.py); mean_field's default picks the faster one
per backend from this script's figures (docs/benchmarks.md). Each row: median of
--repeats timed calls after one warm-up, compile time apart.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import crf

VARIANTS = {
    "scan": functools.partial(crf.mean_field, unroll=False),
    "unrolled": functools.partial(crf.mean_field, unroll=True),
}


def inputs(batch: int, size: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, size, size, classes)).astype(np.float32)
    probs = jax.nn.softmax(jnp.asarray(logits), axis=-1)
    image = jnp.asarray(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
    return probs, image


def time_variant(fn, probs, image, params, repeats: int) -> dict:
    jitted = jax.jit(fn, static_argnums=2)
    t0 = time.perf_counter()
    compiled = jitted.lower(probs, image, params).compile()
    compile_s = time.perf_counter() - t0
    compiled(probs, image).block_until_ready()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        compiled(probs, image).block_until_ready()
        times.append(time.perf_counter() - t0)
    return {"compile_s": compile_s, "median_s": statistics.median(times), "times": times}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512, help="square image side")
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--windows", type=int, nargs="+", default=[5, 11])
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    device = jax.devices()[0]
    print(f"# device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    print(f"# {args.size}x{args.size}, {args.classes} classes, {args.iterations} iterations")
    print("| variant | window | batch | ms/image (median) | ms/call | compile s |")
    print("|---|---|---|---|---|---|")
    rows = []
    for window in args.windows:
        # DeepLab's defaults (configs.base_config's eval.crf_*) with the window varied.
        params = crf.CRFParams(4.0, 121.0, 5.0, 3.0, 3.0, args.iterations, window)
        for batch in args.batch:
            probs, image = inputs(batch, args.size, args.classes)
            for name, fn in VARIANTS.items():
                r = time_variant(fn, probs, image, params, args.repeats)
                r |= {"variant": name, "window": window, "batch": batch}
                rows.append(r)
                print(
                    f"| {name} | {window} | {batch} | {1e3 * r['median_s'] / batch:.2f} "
                    f"| {1e3 * r['median_s']:.2f} | {r['compile_s']:.1f} |",
                    flush=True,
                )
    return rows


if __name__ == "__main__":
    main()
