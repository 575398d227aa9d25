"""How long jaxseg's dense CRF (jaxseg.crf.mean_field) takes per image, on whatever device
jax has, against the same arithmetic written as an unrolled loop.

    python benchmarks/crf_speed.py --size 512 --classes 21 --batch 1 8 --windows 5 11

jaxseg.crf sums each iteration's messages with a `lax.scan` over the window's offsets (one
neighbour map alive at a time: memory stays at a few maps on a CPU). The `unrolled` variant
here writes the same sum as a Python loop, which XLA can fuse into one kernel per iteration
on an accelerator at the price of a program `window^2` times longer. Both give the same
probabilities (tests/test_crf_speed.py); this script says which is faster where it runs.
Each row: median of --repeats timed calls after one warm-up, compile time apart.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxseg import crf


def mean_field_unrolled(probs, image, params: crf.CRFParams, valid=None):
    """jaxseg.crf.mean_field with the offsets' loop unrolled: same inputs, same output."""
    probs = probs.astype(jnp.float32)
    unary = jnp.log(jnp.maximum(probs, jnp.finfo(jnp.float32).tiny))
    weights = crf.kernel_weights(image, params, valid)
    r = params.window // 2
    offsets = crf._offsets(params.window)
    h, w = probs.shape[1:3]

    def iteration(q, _):
        padded = jnp.pad(q, ((0, 0), (r, r), (r, r), (0, 0)))
        message = jnp.zeros_like(q)
        for i, (dy, dx) in enumerate(offsets):
            neighbour = lax.slice_in_dim(
                lax.slice_in_dim(padded, r + dy, r + dy + h, axis=1), r + dx, r + dx + w, axis=2
            )
            message = message + weights[i][..., None] * neighbour
        return jax.nn.softmax(unary + message, axis=-1), None

    q, _ = lax.scan(iteration, probs, None, length=params.iterations)
    return q


VARIANTS = {"scan (jaxseg.crf)": crf.mean_field, "unrolled": mean_field_unrolled}


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
