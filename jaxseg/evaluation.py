"""The evaluation loop shared by train and evaluate: a split's batches through a jitted
eval step (jaxseg.recipe.build's eval_step), counts summed on device, scores on the host."""

from __future__ import annotations

import time

import jax
import numpy as np

from jaxseg import metrics, recipe, sharding, steps, writer


def jit_eval_step(eval_step, mesh):
    """eval_step (recipe.eval_step's partial) jitted once: replicated variables, the batch
    split over the data axis, the replicated totals donated."""
    replicated = sharding.replicated(mesh)
    return jax.jit(
        eval_step,
        in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
        out_shardings=replicated,
        donate_argnums=2,
    )


def evaluate(
    eval_fn, variables, config, source, mesh, *, progress: bool = False, timing: dict | None = None
) -> dict:
    """Scores of jaxseg.metrics over the whole split, from counts summed on device.

    eval_fn: the jitted eval_step partial; variables: {"params", "batch_stats"}, replicated.
    timing: a dict to receive "seconds" (the whole loop), "images_per_s" (after the first
    batch, which compiles, when there are several) and "input_stall": the share of that time
    the device waited for the next batch (each batch is then waited for, so the device is
    idle exactly while the host fetches and transfers the next one).
    """
    num_classes = len(source.class_names)
    local_batch = sharding.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
    totals = jax.device_put(
        steps.empty_totals(num_classes, config.eval.calibration_bins), sharding.replicated(mesh)
    )
    batches = recipe.eval_batches(config, source, local_batch)
    total = -(-len(source) // config.eval.batch_size)
    start = time.perf_counter()
    first = None  # (time, images) when the first batch is done
    waited, done = 0.0, None  # time in next() + transfer after the first batch; last finish
    bar = writer.Bar(batches, total=total, desc="evaluate", unit="batch", disable=not progress)
    for batch in bar:
        global_batch = sharding.to_global(batch, mesh)
        if done is not None:
            waited += time.perf_counter() - done
        totals = eval_fn(variables, global_batch, totals)
        if timing is not None:
            jax.block_until_ready(totals)
            done = time.perf_counter()
            if first is None:
                first = (done, int(batch["valid"].sum()) * jax.process_count())
    totals = jax.device_get(totals)
    if timing is not None:
        end = time.perf_counter()
        timed = (
            (end - first[0], len(source) - first[1]) if total > 1 else (end - start, len(source))
        )
        timing |= {
            "seconds": end - start,
            "images_per_s": timed[1] / max(timed[0], 1e-9),
            "input_stall": waited / max(end - first[0], 1e-9) if total > 1 else None,
        }
    return metrics.scores(
        np.asarray(totals["confusion"], np.int64),
        boundary=np.asarray(totals["boundary"], np.int64),
        calibration=np.asarray(totals["calibration"], np.float64),
    )
