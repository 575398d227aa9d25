"""TrainState: the arrays a run carries from step to step, and their creation."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
    """Arrays only; the model and optimizer are bound to the steps with functools.partial.

    step: i32[] optimizer steps taken. params, batch_stats: Flax variable trees (f32).
    opt_state: the optax state for params.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    image_shape: tuple[int, int, int],
) -> TrainState:
    """Initialises variables from a dummy f32[1,H,W,C] batch. Pure: jit or eval_shape it."""
    variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
    )


def count_params(params) -> int:
    return sum(int(p.size) for p in jax.tree.leaves(params))
