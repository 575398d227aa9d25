"""Gradient accumulation (optim.accumulate_steps, optax.MultiSteps) and the head learning-rate
multiplier (optim.head_lr_mult): k accumulated micro-batches update as one batch k times
larger, the schedule counts updates, resume mid-accumulation is exact, and options that
would not act are refused."""

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg import cli, configs, recipe, sharding, steps
from jaxseg.optim import make_optimizer
from jaxseg.state import create_train_state
from jaxseg.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINEAR = os.path.join(ROOT, "experiments", "linear.py")


class PixelMLP(nn.Module):
    """Two 1x1 layers with a ReLU between, "backbone" and "head": nonlinear, no BatchNorm
    (whose batch statistics differ between micro-batches and the large batch), no dropout."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Dense(8, name="backbone")(x))
        return nn.Dense(self.num_classes, name="head")(x), {}


def _batches(n, batch, size=(6, 7), seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            "image": jnp.asarray(rng.integers(0, 256, (batch, *size, 3), np.uint8)),
            # No ignored pixels: the mean over a micro-batch's pixels averages to the mean
            # over the large batch's only when every micro-batch has as many valid pixels.
            "mask": jnp.asarray(rng.integers(0, 3, (batch, *size)), jnp.int32),
        }
        for _ in range(n)
    ]


def _train(tx, batches):
    model = PixelMLP()
    state = create_train_state(model, tx, jax.random.key(0), (6, 7, 3))
    step = jax.jit(
        functools.partial(
            steps.train_step,
            model=model,
            tx=tx,
            schedule=optax.constant_schedule(0.0),
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
        )
    )
    params = []
    for batch in batches:
        state, _ = step(state, batch, jax.random.key(1))
        params.append(state.params)
    return params


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_accumulated_micro_batches_update_as_the_large_batch(name):
    schedule = optax.linear_schedule(0.1, 0.01, 3)  # changes per update: must count updates
    options = dict(weight_decay=0.01, momentum=0.9, grad_clip=1.0, head_lr_mult=10.0)
    large = _batches(3, 4)
    micro = [{k: v[i : i + 2] for k, v in b.items()} for b in large for i in (0, 2)]
    big = _train(make_optimizer(name, schedule, **options), large)
    acc = _train(make_optimizer(name, schedule, accumulate_steps=2, **options), micro)
    for update in range(3):
        before = acc[2 * update - 1] if update else None
        if before is not None:  # the first micro-step of an update leaves params alone
            jax.tree.map(np.testing.assert_array_equal, acc[2 * update], before)
        jax.tree.map(
            functools.partial(np.testing.assert_allclose, rtol=2e-5, atol=1e-7),
            acc[2 * update + 1],
            big[update],
        )


def test_head_lr_mult_is_a_ten_times_learning_rate_outside_the_backbone():
    params = {"backbone": {"w": jnp.ones((2, 2))}, "head": {"w": jnp.ones((2, 2))}}
    grads = jax.tree.map(lambda p: 0.5 * p, params)
    tx = make_optimizer("sgd", 0.1, momentum=0.9, weight_decay=0.01, head_lr_mult=10.0)
    reference = optax.multi_transform(
        {
            "slow": make_optimizer("sgd", 0.1, momentum=0.9, weight_decay=0.01),
            "fast": make_optimizer("sgd", 1.0, momentum=0.9, weight_decay=0.01),
        },
        {"backbone": {"w": "slow"}, "head": {"w": "fast"}},
    )
    state, ref_state = tx.init(params), reference.init(params)
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        expected, ref_state = reference.update(grads, ref_state, params)
        jax.tree.map(np.testing.assert_allclose, updates, expected)
        params = optax.apply_updates(params, updates)


def test_schedule_counts_updates_and_logs_per_train_step():
    config = cli.load_experiment(
        f"{LINEAR}:quick",
        "--config.total_steps=40",
        "--config.optim.accumulate_steps=4",
        "--config.optim.warmup_steps=8",
        "--config.optim.schedule=poly",
    )
    schedule, tx = recipe.optimizer(config)
    assert isinstance(tx, optax.MultiSteps)
    # 10 updates, 2 of warmup; train steps 4-7 share update 1's learning rate.
    assert float(schedule(0)) == 0.0
    assert float(schedule(4)) == float(schedule(7)) == pytest.approx(0.5 * config.optim.lr)
    assert float(schedule(8)) == pytest.approx(config.optim.lr)
    assert float(schedule(40)) == pytest.approx(0.0, abs=1e-9)


def test_head_lr_mult_refuses_parameters_without_a_backbone_subtree():
    # bisenetv1 has a backbone option but its parameters are "context_path", "arms_0", ...
    tx = make_optimizer("sgd", 0.1, head_lr_mult=10.0)
    with pytest.raises(configs.ConfigError, match="no 'backbone' subtree.*arms_0"):
        tx.init({"arms_0": {"w": jnp.ones(2)}, "context_path": {"w": jnp.ones(2)}})


@pytest.mark.parametrize(
    "overrides,says",
    [
        (["--config.optim.accumulate_steps=0"], "optim.accumulate_steps=0 needs 1 or more"),
        (
            ["--config.optim.accumulate_steps=3", "--config.total_steps=100"],
            "optim.accumulate_steps=3 does not divide total_steps=100",
        ),
        (["--config.optim.head_lr_mult=10.0"], "parameters have no 'backbone' subtree"),
        (["--config.optim.head_lr_mult=0.0"], "optim.head_lr_mult=0.0 must be positive"),
    ],
)
def test_options_that_would_not_act_are_refused_as_the_run_is_built(overrides, says):
    config = cli.load_experiment(f"{LINEAR}:quick", *overrides)
    with pytest.raises(configs.ConfigError, match=says):
        recipe.build(config, mesh=sharding.make_mesh(jax.devices()[:1]))


@pytest.mark.parametrize("key", ["model.decoder=mla", "model.pretrain_size=384"])
def test_options_of_other_models_are_refused_as_the_command_line_is_read(key):
    with pytest.raises(configs.ConfigError, match="model 'linear' does not take it"):
        cli.load_experiment(f"{LINEAR}:quick", f"--config.{key}")


def test_resume_mid_accumulation_is_bit_identical(tmp_path):
    config = cli.load_experiment(
        f"{LINEAR}:quick",
        "--config.data.image_size=(16, 16)",
        "--config.eval.size=(16, 16)",
        "--config.data.num_val=8",
        "--config.eval.batch_size=8",
        "--config.total_steps=6",
        "--config.optim.accumulate_steps=2",
        "--config.log_every=2",
        "--config.eval_every=6",
        "--config.checkpoint_every=6",
    )
    straight = train_and_evaluate(config, str(tmp_path / "straight"))
    # Stopped after step 3: half an accumulation, whose gradient the checkpoint carries.
    assert train_and_evaluate(config, str(tmp_path / "resumed"), stop_after=3)["step"] == 3
    resumed = train_and_evaluate(config, str(tmp_path / "resumed"))
    assert resumed["step"] == 6
    jax.tree.map(
        np.testing.assert_array_equal,
        jax.device_get(straight["state"]),
        jax.device_get(resumed["state"]),
    )
    assert int(resumed["state"].opt_state.gradient_step) == 3
