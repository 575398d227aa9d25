"""What the step benchmarks share (python -m jaxseg.benchmark times a step, python -m
jaxseg.aot compiles it for a TPU slice): the step jitted as jaxseg.train and
jaxseg.evaluate run it, a random batch of the right shapes, the record's description of
what ran, the command-line flags that size the step, and the JSON-lines results file."""

from __future__ import annotations

import functools
import json
import os
import shlex

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from jaxseg import cli, config_checks, configs, inference, provenance, recipe, sharding
from jaxseg.state import count_params


def infer_step(state, batch: dict, *, model, mean, std, settings, window_sharding=None):
    """jaxseg.inference as evaluate and predict run it (config.eval: whole, slide, TTA):
    u8[B,H,W,C] -> predicted classes i32[B,H,W]."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    scores = inference.scores(
        variables,
        batch["image"],
        model=model,
        mean=mean,
        std=std,
        settings=settings,
        window_sharding=window_sharding,
    )
    return inference.labels(scores)


def step_function(config, model, tx, schedule, mesh, *, mode: str, num_classes: int):
    """(the step of `mode` jitted over mesh, inference settings or None for train).

    train: (state, batch, rng) -> (state, metrics), state donated, as jaxseg.train jits it;
    infer: (state, batch) -> predicted classes i32[B,H,W] split over the data axis. The
    batch is split over the data axis, everything else replicated."""
    replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    if mode == "train":
        class_weights = None
        if config.loss.class_weights:
            class_weights = jnp.asarray(config.loss.class_weights)
        elif config.loss.class_weight_method:  # computed from data in train.py; same cost
            class_weights = jnp.ones((num_classes,), jnp.float32)
        fn = jax.jit(
            recipe.train_step(config, model, tx, schedule, class_weights, mesh),
            in_shardings=(replicated, batch_sharding, replicated),
            out_shardings=(replicated, replicated),
            donate_argnums=0,
        )
        return fn, None
    settings = recipe.inference_settings(config, mesh.devices.size)
    fn = jax.jit(
        functools.partial(
            infer_step,
            model=model,
            mean=config.data.mean,
            std=config.data.std,
            settings=settings,
            window_sharding=batch_sharding,  # slide mode splits its windows with it
        ),
        in_shardings=(replicated, batch_sharding),
        out_shardings=batch_sharding,
    )
    return fn, settings


def model_options(config, model) -> dict:
    """config.model's fields as the built model has them (its own defaults filled in)."""
    return {k: getattr(model, k) for k in config.model if k in type(model).__dataclass_fields__}


def describe(config, model, params, *, num_classes: int, mode: str, settings) -> dict:
    """The fields of a benchmark record that say what ran: model, sizes, dtype, loss,
    optimizer or inference settings (step_function's), versions."""
    loss_terms = [[str(name), float(w)] for name, w in config.loss.terms]
    return {
        "framework": "jaxseg",
        "model": config.model.name,
        "model_options": model_options(config, model),
        "params": count_params(params),
        "num_classes": num_classes,
        "mode": mode,
        "batch": config.batch_size,
        "size": list(config.data.image_size),
        "dtype": configs.compute_dtype(config.dtype),
        "optimizer": config.optim.name if mode == "train" else None,
        "loss_terms": loss_terms if mode == "train" else None,
        "inference": None if settings is None else settings.describe(),
        "aux_weights": {str(n): float(w) for n, w in config.loss.aux_weights},
        "versions": provenance.stamp()["versions"],
    }


def random_batch(
    seed: int,
    *,
    batch: int,
    size: tuple[int, int],
    num_classes: int,
    distance: bool,
    canvas: tuple[int, int] | None = None,
) -> dict:
    """This process's share of a random batch, as numpy: {"image": u8[b,H,W,3],
    "mask": i32[b,H,W] in [0, K)} (+ "distance": f32[b,H,W,K] for the boundary loss).
    With a canvas (augment.backend=device), what the train step then augments:
    {"image": u8[b,Hc,Wc,3], "mask": u8[b,Hc,Wc], "size": i32[b,2]} filling the canvas."""
    rng = np.random.default_rng(seed)
    if canvas is not None:
        return {
            "image": rng.integers(0, 256, (batch, *canvas, 3), np.uint8),
            "mask": rng.integers(0, num_classes, (batch, *canvas), np.uint8),
            "size": np.tile(np.asarray(canvas, np.int32), (batch, 1)),
        }
    out = {
        "image": rng.integers(0, 256, (batch, *size, 3), np.uint8),
        "mask": rng.integers(0, num_classes, (batch, *size), np.int32),
    }
    if distance:
        out["distance"] = rng.standard_normal((batch, *size, num_classes), np.float32)
    return out


def device_canvas(config, mode: str, *, with_data: bool) -> tuple[int, int] | None:
    """The canvas a train step of augment.backend=device takes: recipe.canvas_size (the
    training pipeline's), or without data (AOT) augment.canvas_size, else the crop size;
    None for other steps."""
    if mode != "train" or config.augment.backend != "device":
        return None
    if with_data:
        return recipe.canvas_size(config, recipe.make_source(config, "train"))
    return tuple(config.augment.canvas_size) or tuple(config.data.image_size)


def cell(value, spec: str, scale: float = 1.0) -> str:
    """A table cell: value * scale formatted with spec, or n/a for None."""
    return "n/a" if value is None else format(value * scale, spec)


# ---------------------------------------------------------------------------------------------
# Command line and results


def define_size_flags(fv: flags.FlagValues) -> None:
    """--batch, --size and --dtype: shorthands for config.batch_size, config.data.image_size
    and config.dtype (apply_size_flags sets them)."""
    define = dict(flag_values=fv)
    flags.DEFINE_integer("batch", None, "global batch (config.batch_size)", **define)
    flags.DEFINE_string("size", None, "HxW (config.data.image_size)", **define)
    flags.DEFINE_enum(
        "dtype", None, ["bf16", "bfloat16", "f32", "float32"], "config.dtype", **define
    )


def define_step_flags(fv: flags.FlagValues) -> None:
    """The flags of a step benchmark: define_size_flags', --mode, --classes, --workdir and
    --results (see results_path)."""
    define = dict(flag_values=fv)
    define_size_flags(fv)
    flags.DEFINE_string("workdir", None, "default home of --results: runs/<experiment>", **define)
    flags.DEFINE_enum(
        "mode", "train", ["train", "infer"], "time the train step or inference", **define
    )
    flags.DEFINE_integer("classes", None, "number of classes (default: the dataset's)", **define)
    flags.DEFINE_string(
        "results", None, "JSON-lines file (default <workdir>/benchmark.jsonl)", **define
    )


def apply_size_flags(config, fv: flags.FlagValues) -> None:
    """Sets the config fields that --batch, --size and --dtype name, then checks the config's
    options (config_checks.check_options). Raises ValueError or configs.ConfigError."""
    # Locked ConfigDicts accept new values for existing fields.
    if fv.batch is not None:
        config.batch_size = fv.batch
    if fv.size is not None:
        try:
            config.data.image_size = cli.parse_size(fv.size)
        except ValueError as e:
            raise configs.ConfigError(f"--size: {e}") from None
    if fv.dtype is not None:
        config.dtype = "bfloat16" if fv.dtype.startswith("bf") else "float32"
    config_checks.check_options(config)


def class_count(config, classes: int | None, prog: str) -> int:
    """--classes, else the number of classes of the training split (one line and exit 2
    when the data cannot be opened)."""
    if classes is not None:
        return classes
    try:
        return len(recipe.make_source(config, "train").class_names)
    except (OSError, ValueError) as e:
        cli.fail(prog, f"{e} (or give --classes K)")


def results_path(fv: flags.FlagValues, argv: list[str]) -> str:
    """--results, else <workdir>/benchmark.jsonl (workdir: --workdir, else the experiment's
    runs/<stem>)."""
    workdir = fv.workdir or cli.default_workdir(cli.config_spec(argv))
    return fv.results or os.path.join(workdir, "benchmark.jsonl")


def append_record(record: dict, prog: str, argv: list[str], results: str) -> None:
    """Dates the record, names its command and appends it to results as one JSON line."""
    record["date"] = provenance.stamp()["date"]
    record["command"] = shlex.join(["python", "-m", prog, *argv])
    os.makedirs(os.path.dirname(results) or ".", exist_ok=True)
    with open(results, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"appended to {results}")
