"""End-to-end: sharding equivalence, resume, every experiment file."""

import functools
import gc
import glob
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg import cli, configs, losses, recipe, sharding, steps
from jaxseg.models import build_model
from jaxseg.state import create_train_state
from jaxseg.train import train_and_evaluate
from tests import dataset_trees

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py")))
TINY = [
    "--config.data.image_size=(32, 32)",
    "--config.data.num_val=12",
    "--config.batch_size=8",
    "--config.eval.batch_size=8",
    "--config.model.base_width=4",
]


def _config(path, *overrides):
    return cli.load_experiment(path, *overrides)


def _step_on(devices, state, batch):
    """One train step jitted over a mesh of `devices`; tx is identity so params += grads."""
    mesh = sharding.make_mesh(devices)
    model = build_model("unet", 5, base_width=4, depth=2)
    fn = jax.jit(
        functools.partial(
            steps.train_step,
            model=model,
            tx=optax.identity(),
            schedule=optax.constant_schedule(0.0),
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
        ),
        in_shardings=(
            sharding.replicated(mesh),
            sharding.batch_sharding(mesh),
            sharding.replicated(mesh),
        ),
        out_shardings=sharding.replicated(mesh),
    )
    state = jax.device_put(state, sharding.replicated(mesh))
    batch = jax.device_put(batch, sharding.batch_sharding(mesh))
    return jax.device_get(fn(state, batch, jax.random.key(1)))


def test_one_device_equals_eight_devices():
    assert jax.device_count() == 8, "conftest must give 8 fake CPU devices"
    model = build_model("unet", 5, base_width=4, depth=2)
    state = create_train_state(model, optax.identity(), jax.random.key(0), (16, 16, 3))
    rng = np.random.default_rng(0)
    # Per-example statistics differ a lot, so per-device BatchNorm would be visibly wrong.
    images = rng.integers(0, 256, (8, 16, 16, 3)) * np.linspace(0.2, 1, 8)[:, None, None, None]
    batch = {
        "image": images.astype(np.uint8),
        "mask": rng.integers(0, 5, (8, 16, 16)).astype(np.int32),
    }
    state = jax.device_get(state)
    one, m1 = _step_on(jax.devices()[:1], state, batch)
    eight, m8 = _step_on(jax.devices(), state, batch)
    np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)
    grads1 = jax.tree.map(lambda a, b: a - b, one.params, state.params)
    grads8 = jax.tree.map(lambda a, b: a - b, eight.params, state.params)
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads1)) > 1e-4  # non-trivial
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads1, grads8
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        one.batch_stats,
        eight.batch_stats,
    )


def _train_losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_resume_is_bit_identical(tmp_path):
    unet = os.path.join(ROOT, "experiments", "unet.py")
    config = _config(
        f"{unet}:quick",
        *TINY,
        "--config.total_steps=8",
        "--config.log_every=2",
        "--config.eval_every=4",
        "--config.checkpoint_every=4",
    )
    straight = train_and_evaluate(config, str(tmp_path / "straight"))
    # Stopped between log lines: step 3 is logged (averaged with step 4) after the resume.
    first = train_and_evaluate(config, str(tmp_path / "resumed"), stop_after=3)
    assert first["step"] == 3
    resumed = train_and_evaluate(config, str(tmp_path / "resumed"))
    assert resumed["step"] == 8
    jax.tree.map(
        np.testing.assert_array_equal,
        jax.device_get(straight["state"]),
        jax.device_get(resumed["state"]),
    )
    losses = _train_losses(tmp_path / "straight")
    assert sorted(losses) == [2, 4, 6, 8]
    assert _train_losses(tmp_path / "resumed") == losses
    assert os.path.exists(tmp_path / "resumed" / "config.json")


# The narrow models run end to end in every CI run; the fixed-width ones (ResNet, VGG,
# MobileNet, MiT) take a jitted step in tests/test_models.py and run end to end here
# when slow tests are asked for.
CHEAP = ("unet.py", "unet_membrane.py", "linear.py", "encoder_decoder.py")
WALK = [
    p if os.path.basename(p) in CHEAP else pytest.param(p, marks=pytest.mark.slow)
    for p in EXPERIMENTS
]


@pytest.mark.parametrize("path", WALK, ids=os.path.basename)
def test_experiment_runs_one_train_and_eval_step(path, tmp_path):
    quick = _config(f"{path}:quick")
    # Narrow to what the experiment's model and dataset take: the config has nothing else.
    takes = set(configs.flat_keys(quick))
    tiny = [o for o in TINY if o.split("=")[0].removeprefix("--config.") in takes]
    if "data.root" in takes and not quick.data.root and quick.data.name != "membrane":
        # A dataset read from its provider's layout: a tiny tree of it, evaluated as the
        # quick run says (its images are larger than TINY's canvas).
        roots = dataset_trees.build_all(str(tmp_path / "data"))
        root = roots["voc" if quick.data.name == "voc_aug" else quick.data.name]
        tiny = [o for o in tiny if "image_size" not in o and "eval.size" not in o]
        tiny.append(f"--config.data.root={root}")
    # One update: a step per accumulated batch (setr's quick run accumulates two).
    updates = quick.optim.accumulate_steps
    config = _config(f"{path}:quick", *tiny, f"--config.total_steps={updates}")
    result = train_and_evaluate(config, str(tmp_path / "run"))
    assert result["step"] == updates
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert np.isfinite(rows[0]["train/loss"]) and 0 <= rows[1]["val/miou"] <= 1
    assert len(jax.tree.leaves(result["state"].params)) > 0
    assert jnp.isfinite(result["scores"]["pixel_acc"])
    del result
    jax.clear_caches()  # the walk compiles a dozen large models in one process
    gc.collect()


def test_bfloat16_compute_keeps_f32_params_and_optimizer_state(tmp_path):
    unet = os.path.join(ROOT, "experiments", "unet.py")
    config = _config(f"{unet}:quick", *TINY, "--config.total_steps=2", "--config.dtype=bfloat16")
    result = train_and_evaluate(config, str(tmp_path))
    state = result["state"]
    assert {x.dtype for x in jax.tree.leaves((state.params, state.opt_state))} <= {
        jnp.dtype(jnp.float32),
        jnp.dtype(jnp.int32),
    }
    with open(tmp_path / "metrics.jsonl") as f:
        assert np.isfinite(json.loads(f.readline())["train/loss"])
    # config.dtype acts: every convolution of the step (forward and backward) runs in bf16,
    # and in f32 without it.
    for dtype, expected in (("bfloat16", jnp.bfloat16), ("float32", jnp.float32)):
        c = _config(f"{unet}:quick", *TINY, f"--config.dtype={dtype}")
        schedule, tx = recipe.optimizer(c)
        model = recipe.build_model(c, 5)
        step = recipe.train_step(c, model, tx, schedule, None)
        state = jax.eval_shape(
            lambda m=model, t=tx: create_train_state(m, t, jax.random.key(0), (32, 32, 3))
        )
        batch = {
            "image": jax.ShapeDtypeStruct((8, 32, 32, 3), jnp.uint8),
            "mask": jax.ShapeDtypeStruct((8, 32, 32), jnp.int32),
        }
        jaxpr = jax.make_jaxpr(step)(state, batch, jax.random.key(0))
        dtypes = _conv_input_dtypes(jaxpr.jaxpr)
        assert len(dtypes) >= 3 * 10 and set(dtypes) == {jnp.dtype(expected)}, (dtype, dtypes)


def _conv_input_dtypes(jaxpr) -> list:
    """dtypes of the inputs of every conv_general_dilated in a jaxpr, nested ones included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            found += [v.aval.dtype for v in eqn.invars]
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _conv_input_dtypes(inner)
    return found


def test_eval_counts_equal_on_one_and_eight_devices():
    model = build_model("unet", 4, base_width=4, depth=2)
    state = jax.device_get(
        create_train_state(model, optax.identity(), jax.random.key(0), (16, 16, 3))
    )
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    rng = np.random.default_rng(1)
    batch = {
        "image": rng.integers(0, 256, (8, 16, 16, 3)).astype(np.uint8),
        "mask": rng.integers(0, 4, (8, 16, 16)).astype(np.int32),
        "valid": np.arange(8) < 7,
    }  # one padded example
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = sharding.make_mesh(devices)
        fn = jax.jit(
            functools.partial(
                steps.eval_step, model=model, num_classes=4, mean=(0.5,) * 3, std=(0.25,) * 3
            ),
            in_shardings=(
                sharding.replicated(mesh),
                sharding.batch_sharding(mesh),
                sharding.replicated(mesh),
            ),
            out_shardings=sharding.replicated(mesh),
        )
        totals = jax.device_put(steps.empty_totals(4), sharding.replicated(mesh))
        results.append(
            jax.device_get(
                fn(
                    jax.device_put(variables, sharding.replicated(mesh)),
                    jax.device_put(batch, sharding.batch_sharding(mesh)),
                    totals,
                )
            )
        )
    one, eight = results
    np.testing.assert_array_equal(one["confusion"], eight["confusion"])
    np.testing.assert_array_equal(one["boundary"], eight["boundary"])
    np.testing.assert_allclose(one["calibration"], eight["calibration"], rtol=1e-5)
    assert one["confusion"].sum() == 7 * 16 * 16  # the padded example is not counted


def test_loss_terms_and_computed_class_weights(tmp_path):
    unet = os.path.join(ROOT, "experiments", "unet.py")
    config = _config(
        f"{unet}:quick",
        *TINY,
        "--config.total_steps=1",
        "--config.data.num_train=16",
        "--config.loss.terms=(('ce', 1.0), ('dice', 0.5), ('lovasz', 0.5))",
        "--config.loss.class_weight_method=median",
        # Training's evaluation is jaxseg.inference: sliding windows work here too.
        "--config.eval.mode=slide",
        "--config.eval.crop_size=(16, 16)",
    )
    result = train_and_evaluate(config, str(tmp_path))
    with open(tmp_path / "class_weights.json") as f:
        cached = json.load(f)
    assert cached["method"] == "median" and len(cached["weights"]) == 5
    with open(tmp_path / "metrics.jsonl") as f:
        assert np.isfinite(json.loads(f.readline())["train/loss"])
    assert "boundary_iou" in result["scores"] and "ece" in result["scores"]
    assert result["scores"]["confusion"].sum() == 12 * 64 * 64  # every val pixel (eval.size), once


def test_unknown_loss_name_is_rejected(tmp_path):
    unet = os.path.join(ROOT, "experiments", "unet.py")
    # Refused as the command line is read, before a run directory is touched.
    with pytest.raises(configs.ConfigError, match=r"\['dcie'\]; valid: .*dice"):
        _config(f"{unet}:quick", *TINY, "--config.loss.terms=(('dcie', 1.0),)")
    assert not os.listdir(tmp_path)


class _TwoHeads(nn.Module):
    """Main logits plus a half-resolution auxiliary head, to test aux-loss weighting."""

    @nn.compact
    def __call__(self, x, train=False):
        logits = nn.Conv(3, (1, 1))(x)
        aux = nn.Conv(3, (1, 1))(x[:, ::2, ::2])
        return logits, {"aux": aux}


def test_aux_head_loss_is_added_with_its_weight():
    model = _TwoHeads()
    state = create_train_state(model, optax.identity(), jax.random.key(0), (4, 4, 3))
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.integers(0, 256, (2, 4, 4, 3)), jnp.uint8),
        "mask": jnp.asarray(rng.integers(0, 3, (2, 4, 4)), jnp.int32),
    }
    step = functools.partial(
        steps.train_step,
        model=model,
        tx=optax.identity(),
        schedule=optax.constant_schedule(0.0),
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
    )
    _, plain = step(state, batch, jax.random.key(0))
    _, with_aux = step(state, batch, jax.random.key(0), aux_weights=(("aux", 0.4),))
    x = steps.normalize(batch["image"], (0.0,) * 3, (1.0,) * 3)
    _, aux = model.apply({"params": state.params}, x)
    aux_logits = jax.image.resize(aux["aux"], (2, 4, 4, 3), "bilinear")
    aux_loss = losses.weighted_mean(*losses.cross_entropy(aux_logits, batch["mask"]))
    np.testing.assert_allclose(with_aux["loss"], plain["loss"] + 0.4 * aux_loss, rtol=1e-6)
    with pytest.raises(KeyError, match=r"'auxx'.*\['aux'\]"):
        step(state, batch, jax.random.key(0), aux_weights=(("auxx", 0.4),))
