"""Spatial partitioning (mesh.spatial, issue 24 part 2): crops split over H on a "spatial"
mesh axis give the loss, gradients and BatchNorm statistics of plain data parallelism, on the
8 fake CPU devices; the train command logs the same losses; bad counts are one line."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg import cli, config_checks, configs, recipe, sharding, steps
from jaxseg.models import build_model, mit
from jaxseg.state import create_train_state
from jaxseg.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 5
# Tiny widths, crops of 128 rows (32 a device at spatial 4: the refusal below 32 rows a
# device, config_checks.MAX_STRIDE, is what these sizes respect) and narrow widths.
# DeepLabV3+ is compared in float64: in float32 its gradients move by 2e-3 of the largest
# under any change of summation order, plain data parallelism included (docs/benchmarks.md,
# "Spatial partitioning"), so float32 cannot tell a partitioning error from rounding there.
CASES = {
    "unet": (dict(base_width=4, depth=2), (128, 16), jnp.float32),
    "deeplabv3plus": (dict(backbone="resnet18", output_stride=8), (128, 32), jnp.float64),
    "segformer": (dict(backbone="mit_b0"), (128, 32), jnp.float32),
}


def keep_grads():
    """An optimizer whose state becomes the step's gradients (and params stay put), so the
    step hands back its gradients exactly, not as a difference of params."""

    def update(grads, state, params=None):
        return jax.tree.map(jnp.zeros_like, grads), grads

    return optax.GradientTransformation(lambda p: jax.tree.map(jnp.zeros_like, p), update)


def _step(model, spatial, state, batch):
    """(loss, grads, batch_stats, compiled HLO text) of one train step jitted as
    jaxseg.train jits it, on all 8 devices with `spatial` of them sharing each crop."""
    mesh = sharding.make_mesh(jax.devices(), spatial=spatial)
    replicated = sharding.replicated(mesh)
    fn = jax.jit(
        functools.partial(
            steps.train_step,
            model=model,
            tx=keep_grads(),
            schedule=optax.constant_schedule(0.0),
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
            spatial_sharding=sharding.spatial_sharding(mesh),
        ),
        in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
        out_shardings=replicated,
    )
    args = (
        jax.device_put(state, replicated),
        sharding.to_global(batch, mesh),
        jax.random.key(1),
    )
    compiled = fn.lower(*args).compile()  # called as is: one compile, its text inspected
    new, metrics = jax.device_get(compiled(*args))
    return float(metrics["loss"]), new.opt_state, new.batch_stats, compiled.as_text()


def _rel_err(a, b) -> float:
    """max |a - b| over the tree, relative to max |b|."""
    a, b = jax.tree.leaves(a), jax.tree.leaves(b)
    num = max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b, strict=True)
    )
    return num / max(float(np.max(np.abs(np.asarray(y)))) for y in b)


@pytest.mark.parametrize(
    "name",
    # DeepLabV3+ (42 s: three float64 compiles) under slow, for the default suite's budget.
    ["unet", pytest.param("deeplabv3plus", marks=pytest.mark.slow), "segformer"],
)
def test_spatial_2_and_4_match_data_parallel(name, monkeypatch):
    # MiT-B0's widths with one block a stage (not two): the same layers, half the compile.
    monkeypatch.setitem(mit.VARIANTS, "mit_b0", (mit.VARIANTS["mit_b0"][0], (1, 1, 1, 1)))
    options, (height, width), dtype = CASES[name]
    with jax.enable_x64(dtype == jnp.float64):
        model = build_model(name, CLASSES, **options).clone(dtype=dtype)
        state = create_train_state(
            model, keep_grads(), jax.random.key(0), image_shape=(height, width, 3)
        )
        state = jax.tree.map(lambda a: a.astype(dtype) if a.dtype == jnp.float32 else a, state)
        rng = np.random.default_rng(0)
        # A brightness of each image's own, so pooled features (ASPP's image pooling,
        # BatchNorm over 8 values) differ across the batch: iid noise images make them nearly
        # equal and their BatchNorm amplifies rounding without bound.
        offset = rng.integers(0, 128, (8, 1, 1, 3))
        batch = {
            "image": (rng.integers(0, 128, (8, height, width, 3)) + offset).astype(np.uint8),
            "mask": rng.integers(0, CLASSES, (8, height, width), np.int32),
        }
        batch["mask"][:, :3] = 255  # ignored rows, all in the first spatial shard
        loss, grads, stats, hlo = _step(model, 1, state, batch)
        assert jax.tree.leaves(grads)[0].dtype == dtype
        assert "collective-permute" not in hlo  # today's program: no halo exchange
        for spatial in (2, 4):
            loss_k, grads_k, stats_k, hlo_k = _step(model, spatial, state, batch)
            # The split is real: XLA exchanges halo rows between neighbouring shards.
            assert "collective-permute" in hlo_k, spatial
            assert abs(loss_k - loss) <= 1e-5 * abs(loss), (spatial, loss_k, loss)
            assert _rel_err(grads_k, grads) <= 1e-5, (spatial, _rel_err(grads_k, grads))
            if jax.tree.leaves(stats):  # BatchNorm statistics over the global batch
                assert _rel_err(stats_k, stats) <= 1e-5, (spatial, _rel_err(stats_k, stats))


def _config(*overrides, size=(64, 32)):
    return cli.load_experiment(
        os.path.join(ROOT, "experiments", "unet.py:quick"),
        "--config.total_steps=4",
        "--config.log_every=1",
        "--config.eval_every=4",
        "--config.checkpoint_every=4",
        "--config.batch_size=8",
        "--config.eval.batch_size=8",
        "--config.data.num_val=8",
        f"--config.data.image_size={size}",
        f"--config.eval.size={size}",
        "--config.model.base_width=4",
        "--config.model.depth=2",
        "--config.loader.num_workers=0",
        *overrides,
    )


def _logged(workdir) -> dict:
    """{step: {metric: value}} of a run's metrics.jsonl (train losses and val scores)."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            out.setdefault(row["step"], {}).update(row)
    return out


def test_train_command_logs_the_losses_of_spatial_1(tmp_path):
    """The done-when command (unet.py:quick --config.mesh.spatial=2) at 4 tiny steps: the
    same train losses (1e-5 relative) and val scores as spatial 1."""
    runs = {}
    for spatial in (1, 2):
        workdir = str(tmp_path / f"spatial{spatial}")
        train_and_evaluate(_config(f"--config.mesh.spatial={spatial}"), workdir)
        runs[spatial] = _logged(workdir)
    losses = {
        k: [r["train/loss"] for r in run.values() if "train/loss" in r] for k, run in runs.items()
    }
    assert len(losses[1]) == 4
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-5)
    val = {k: [r["val/miou"] for r in run.values() if "val/miou" in r] for k, run in runs.items()}
    np.testing.assert_allclose(val[2], val[1], rtol=1e-5)


def test_bad_spatial_counts_are_one_line():
    with pytest.raises(
        configs.ConfigError, match=r"^mesh.spatial=3 does not divide the crop height"
    ):
        config_checks.check_options(_config("--config.mesh.spatial=3"))
    with pytest.raises(configs.ConfigError, match=r"mesh.spatial=0 does not divide"):
        config_checks.check_options(_config("--config.mesh.spatial=0"))
    # 64 rows over 4 devices: 16 rows each, under the deepest stride's 32.
    with pytest.raises(
        configs.ConfigError,
        match=r"^mesh.spatial=4 needs data.image_size\[0\] >= 128 \(32 rows a device, .*got 64$",
    ):
        config_checks.check_options(_config("--config.mesh.spatial=4"))
    config = _config("--config.mesh.spatial=16", size=(512, 32))
    config_checks.check_options(config)  # 32 rows a device: the crop takes it, 8 devices not
    with pytest.raises(
        configs.ConfigError, match=r"^mesh.spatial=16 does not divide the 8 devices$"
    ):
        recipe.make_mesh(config)
    mesh = recipe.make_mesh(_config("--config.mesh.spatial=4", size=(128, 32)))
    assert dict(mesh.shape) == {"data": 2, "spatial": 4}
    with pytest.raises(ValueError, match=r"batch_size=5 does not split over 2 data replicas"):
        sharding.check_batch_size(5, mesh)
    assert sharding.make_mesh().axis_names == ("data",)  # spatial 1: today's 1-D mesh
    # Without spatial partitioning any crop height goes: nothing is split.
    assert dict(recipe.make_mesh(_config(size=(16, 16))).shape) == {"data": 8}
