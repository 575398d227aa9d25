"""Checkpoints with orbax (the only module that imports it).

A step directory holds two items: "state" (the TrainState arrays) and "data" (each
process's grain iterator state). Saves are asynchronous. Kept: the newest
`keep` steps plus the best by val/miou; the newest is never deleted.
"""

from __future__ import annotations

import os

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

BEST_METRIC = "val/miou"


def make_manager(directory: str, *, keep: int = 3) -> ocp.CheckpointManager:
    preservation = policies.AnyPreservationPolicy(
        [
            policies.LatestN(n=max(keep, 1)),
            policies.BestN(
                get_metric_fn=lambda m: m[BEST_METRIC],
                n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation,
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,  # a save cut off by a crash leaves a tmp dir
    )
    return ocp.CheckpointManager(
        os.path.abspath(directory), options=options, item_names=("state", "data")
    )


def save(manager, step: int, state, data_iterator, metrics: dict | None = None) -> None:
    """Starts an asynchronous save; the iterator state is captured before this returns."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iterator),
        ),
        metrics={BEST_METRIC: metrics[BEST_METRIC]} if metrics else None,
        force=True,
    )


def restore_latest(manager, state, data_iterator):
    """(state, step) from the newest complete checkpoint, or (state, 0) when there is none.

    `state` is the freshly initialised state: its shapes and shardings are the target.
    The data iterator is restored in place.
    """
    step = manager.latest_step()
    if step is None:
        return state, 0
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(state),
            data=grain.checkpoint.CheckpointRestore(data_iterator),
        ),
    )
    return restored["state"], step


def load_weights(path: str, state):
    """Copies params and batch_stats from a checkpoint into `state` (init_from).

    path: a run's workdir, its checkpoints/ directory, or one step directory in it.
    """
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    step = None
    if os.path.basename(path).isdigit() and os.path.isdir(os.path.join(path, "state")):
        path, step = os.path.dirname(path), int(os.path.basename(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"init_from: {path} is not a directory")
    with ocp.CheckpointManager(
        path, options=ocp.CheckpointManagerOptions(read_only=True), item_names=("state",)
    ) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"init_from: no checkpoint found in {path}")
        target = {"params": state.params, "batch_stats": state.batch_stats}
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=target,
                    restore_args=jax.tree.map(
                        lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target
                    ),
                    partial_restore=True,
                )
            ),
        )["state"]
    return state.replace(params=restored["params"], batch_stats=restored["batch_stats"])
