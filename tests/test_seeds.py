"""config.seeds: N replicas in one run, each equal to its seed's run alone; their spread."""

import json
import os
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import cli, config_checks, configs, seeds, sharding
from jaxseg.evaluate import evaluate_run
from jaxseg.segmenter import Segmenter
from jaxseg.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET = os.path.join(ROOT, "experiments", "unet.py")
TINY = [
    "--config.data.image_size=(32, 32)",
    "--config.data.num_val=8",
    "--config.batch_size=8",
    "--config.eval.batch_size=8",
    "--config.model.base_width=4",
    "--config.total_steps=4",
    "--config.log_every=2",
    "--config.eval_every=0",
    "--config.checkpoint_every=0",
]
T_975_DF2 = 4.302652729911275  # Student's t, 97.5th percentile, 2 degrees of freedom (tables)


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_resumed_replica_equals_its_seed_alone_and_spread_is_logged(tmp_path, capsys):
    config = cli.load_experiment(f"{UNET}:quick", *TINY, "--config.seed=5", "--config.seeds=3")
    # Stopped after step 3 (between log lines) and resumed: the checkpoint holds every
    # replica and its data stream, so the resumed run still equals each seed's run alone.
    assert train_and_evaluate(config, str(tmp_path / "three"), stop_after=3)["step"] == 3
    together = train_and_evaluate(config, str(tmp_path / "three"))
    assert together["step"] == 4
    alone_config = cli.load_experiment(f"{UNET}:quick", *TINY, "--config.seed=6")
    alone = train_and_evaluate(alone_config, str(tmp_path / "alone"))
    # Replica 1 uses seed 5 + 1: parameters, optimizer state and BatchNorm stats bit for bit.
    jax.tree.map(
        np.testing.assert_array_equal,
        jax.device_get(together["state"][1]),
        jax.device_get(alone["state"]),
    )
    alone_params = jax.device_get(alone["state"].params)
    # seeds_vmap: the replicas in one vmapped program; not bit-equal, within f32 drift.
    vmap_config = cli.load_experiment(
        f"{UNET}:quick", *TINY, "--config.seed=5", "--config.seeds=3", "--config.seeds_vmap=True"
    )
    vmapped = train_and_evaluate(vmap_config, str(tmp_path / "vmapped"))
    assert len(vmapped["state"]) == 3 and vmapped["step"] == 4
    for seed in (5, 6, 7):  # each replica keeps its own seed's data, keys and losses
        key = f"train/loss/seed{seed}"
        mine = [r[key] for r in _rows(tmp_path / "vmapped") if key in r]
        theirs = [r[key] for r in _rows(tmp_path / "three") if key in r][-len(mine) :]
        np.testing.assert_allclose(mine, theirs, rtol=1e-5)
    # Adam moves a parameter whose gradient is within rounding of 0 by up to lr a step.
    drift = jax.tree.map(
        lambda a, b: float(np.max(np.abs(a - b))),
        jax.device_get(vmapped["state"][1].params),
        alone_params,
    )
    assert 0 < max(jax.tree.leaves(drift)) < 1e-3, max(jax.tree.leaves(drift))
    rows, single = _rows(tmp_path / "three"), _rows(tmp_path / "alone")
    for key in ("train/loss", "train/grad_norm", "val/miou", "val/pixel_acc"):
        mine = [r for r in rows if f"{key}/seed6" in r]
        theirs = [r for r in single if key in r]
        assert [r[f"{key}/seed6"] for r in mine] == [r[key] for r in theirs], key
    # The spread, by hand: mean, sample std, mean +- t(0.975, 2) std / sqrt(3).
    last = [r for r in rows if "val/miou" in r][-1]
    values = [last[f"val/miou/seed{s}"] for s in (5, 6, 7)]
    assert len(set(values)) > 1  # the seeds differ, so the interval is not trivial
    half = T_975_DF2 * statistics.stdev(values) / np.sqrt(3)
    np.testing.assert_allclose(last["val/miou"], statistics.fmean(values), rtol=1e-12)
    np.testing.assert_allclose(last["val/miou/std"], statistics.stdev(values), rtol=1e-12)
    np.testing.assert_allclose(last["val/miou/ci95_low"], statistics.fmean(values) - half)
    np.testing.assert_allclose(last["val/miou/ci95_high"], statistics.fmean(values) + half)
    table = capsys.readouterr().out
    assert "3 seeds (5, 6, 7)" in table and "val/miou " in table

    # evaluate scores every replica on its own seed's split; predict/export read one of them.
    report = evaluate_run(str(tmp_path / "three"), progress=False)
    assert [r["scores"]["miou"] for r in report["per_seed"]] == values
    assert report["spread"]["val/miou/ci95_high"] == last["val/miou/ci95_high"]
    seg = Segmenter.from_workdir(str(tmp_path / "three"), seed_index=1)
    jax.tree.map(np.testing.assert_array_equal, seg.variables["params"], alone_params)
    best = Segmenter.from_workdir(str(tmp_path / "three"))  # default: the best val mIoU
    best_params = jax.device_get(together["state"][int(np.argmax(values))].params)
    jax.tree.map(np.testing.assert_array_equal, best.variables["params"], best_params)
    assert (seg.seed_index, best.seed_index) == (1, int(np.argmax(values)))  # the manifest's


def test_summary_of_two_values_by_hand():
    # mean 2, std sqrt(2), t(0.975, 1) = 12.706204736174705 (tables): half 12.7062 * 1.
    s = seeds.summary([1.0, 3.0])
    assert (s["mean"], s["std"]) == (2.0, np.sqrt(2.0))
    np.testing.assert_allclose(s["ci95_high"] - s["mean"], 12.706204736174705, rtol=1e-12)


def test_seeds_vmap_needs_several_seeds():
    config = cli.load_experiment(f"{UNET}:quick", *TINY, "--config.seeds_vmap=True")
    with pytest.raises(configs.ConfigError, match=r"^seeds_vmap=True acts only with seeds > 1"):
        config_checks.check_options(config)


def _toy_step(state, batch, key):
    """A least-squares step whose loss centres over the batch (as BatchNorm does): any split
    of the batch over devices needs an all-reduce."""

    def loss(w):
        y = batch["image"] @ w
        return jnp.mean((y - y.mean(0)) ** 2) + 0.0 * jax.random.uniform(key)

    value, grad = jax.value_and_grad(loss)(state["w"])
    return {"w": state["w"] - 0.1 * grad}, {"loss": value}


def _toy_inputs(n):
    rng = np.random.default_rng(0)
    states = tuple({"w": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)} for _ in range(n))
    batches = tuple({"image": jnp.asarray(rng.normal(size=(8, 6)), jnp.float32)} for _ in range(n))
    return states, batches, tuple(jax.random.split(jax.random.key(0), n))


@pytest.mark.parametrize("n", [8, 16, 3])
def test_vmapped_replicas_spread_over_the_devices_when_they_divide(n):
    mesh = sharding.make_mesh()  # 8 devices, one "data" axis
    assert seeds.spreads(mesh, n) == (n % 8 == 0)
    fn = seeds.vmapped(_toy_step, mesh, n)
    states, batches, keys = _toy_inputs(n)
    program = fn.lower(states, batches, keys).compile().as_text()
    # The per-device activations y = x @ w: whole replicas with their whole batch of 8 on
    # each device (n / 8 of them), or, not spread, every replica with 1 of its 8 rows.
    activations = "f32[1,8,4]" if n == 8 else "f32[2,8,4]" if n == 16 else "f32[3,1,4]"
    assert activations in program
    expected = [jax.jit(_toy_step)(s, b, k) for s, b, k in zip(states, batches, keys, strict=True)]
    new, metrics = fn(states, batches, keys)
    for i, (state, m) in enumerate(expected):
        np.testing.assert_allclose(new[i]["w"], state["w"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(metrics["loss"][i], m["loss"], rtol=1e-6)


def test_no_spread_with_a_spatial_axis_or_one_device():
    assert not seeds.spreads(sharding.make_mesh(spatial=2), 8)
    assert not seeds.spreads(sharding.make_mesh(jax.devices()[:1]), 8)


@pytest.mark.slow  # 8 replicas twice: 106 s alone on 2 cores
def test_eight_vmapped_replicas_on_eight_devices_track_their_bit_equal_runs(tmp_path, capsys):
    runs = {}
    for vmap in (False, True):
        config = cli.load_experiment(
            f"{UNET}:quick", *TINY, "--config.seeds=8", f"--config.seeds_vmap={vmap}"
        )
        train_and_evaluate(config, str(tmp_path / str(vmap)))
        runs[vmap] = _rows(tmp_path / str(vmap))
    assert "x 8 seeds (spread over the devices) on 8 cpu device(s)" in capsys.readouterr().out
    for seed in range(8):  # measured: within 8.2e-7 after 4 steps
        key = f"train/loss/seed{seed}"
        mine, theirs = ([r[key] for r in runs[v] if key in r] for v in (True, False))
        assert len(mine) == 2
        np.testing.assert_allclose(mine, theirs, rtol=1e-5)
