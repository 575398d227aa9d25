"""The one place that turns a config into parts: sources, model, optimizer, iterators, class
weights, inference settings and the step partials. A run gets them all at once from
build() -> Parts; evaluate, predict, export and the benchmarks take the pieces they need.
Entry points jit the partials themselves.

The config holds only options the chosen model, dataset and losses take (jaxseg.configs);
options that would not act are refused by jaxseg.config_checks, values a part refuses (an
optimizer name, a CRF parameter) as build makes that part.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg import checkpoint, config_checks, configs, inference, losses, sharding, steps
from jaxseg import workdir as run_files
from jaxseg.channel_stats import CACHE_NAME as STATS_CACHE
from jaxseg.channel_stats import channel_stats
from jaxseg.class_weights import class_weights as compute_class_weights
from jaxseg.class_weights import image_classes
from jaxseg.crf import CRFError, CRFParams
from jaxseg.data import make_source as _make_source
from jaxseg.data.augment_spec import AugmentSpec
from jaxseg.data.pipeline import eval_batches as _eval_batches
from jaxseg.data.pipeline import sampling_probabilities
from jaxseg.data.pipeline import train_iterator as _train_iterator
from jaxseg.models import build_model as _build_model
from jaxseg.optim import make_optimizer, make_schedule
from jaxseg.state import create_train_state

# --------------------------------------------------------------------------------- data


def make_source(config, split: str):
    """The `split` ("train", "val" or "test") of config.data's dataset."""
    data = config.data
    options = {k: v for k, v in data.items() if k not in ("name", "mean", "std")}
    options |= {"seed": config.seed, "eval_size": tuple(config.eval.size)}
    try:
        return _make_source(data.name, split, **options)
    except (ValueError, KeyError, OSError) as e:  # paths, names, lists: the user's to fix
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise configs.ConfigError(message) from e


def worker_count(config, workdir: str | None = None) -> int:
    """loader.num_workers, with -1 (auto) resolved: the count a run in `workdir` started with
    (grain cannot restore an iterator's state into another worker count), else
    AUTO_WORKERS(os.cpu_count())."""
    workers = config.loader.num_workers
    if workers >= 0:
        return workers
    if workdir is not None and run_files.has_config(workdir):
        saved = run_files.read_config(workdir).loader.num_workers
        if saved >= 0:
            return saved
    return auto_workers(os.cpu_count() or 1)


def auto_workers(cores: int) -> int:
    """The grain worker processes loader.num_workers=-1 picks on a machine with `cores` CPU
    cores: none up to 4 cores (there the model's step needs the cores, and the main
    process's read threads keep the input stall near 1 %: docs/benchmarks.md), else one
    per core but two (the trainer and the transfer thread keep theirs), at most 32."""
    return 0 if cores <= 4 else min(cores - 2, 32)


def augment_options(config: ml_collections.ConfigDict) -> dict:
    """jaxseg.data.augment_spec.AugmentSpec's fields as keyword arguments (of the pipeline's
    train_iterator): the augment section but the device canvas, and the crop data.image_size."""
    options = {k: v for k, v in config.augment.items() if k != "canvas_size"}
    return options | {"crop_size": tuple(config.data.image_size)}


def canvas_size(config, source) -> tuple[int, int]:
    """augment.canvas_size, or the size of the first training example."""
    if config.augment.canvas_size:
        return tuple(config.augment.canvas_size)
    return tuple(int(v) for v in np.shape(source[0]["mask"]))


def train_iterator(
    config,
    source,
    batch_size: int,
    *,
    num_workers: int | None = None,
    workdir: str | None = None,
    progress: bool = False,
):
    """The checkpointable training stream of this process (batch_size: its share).

    num_workers: grain worker processes (default: worker_count). workdir: where the class
    presence of class-balanced sampling is cached (none: counted afresh).
    """
    data, loader = config.data, config.loader
    if len(source) // jax.process_count() < batch_size:  # the user's to fix: one line
        raise configs.ConfigError(
            f"the train split of {data.name!r} has {len(source)} examples, fewer than one "
            f"batch of {batch_size * jax.process_count()}: lower --config.batch_size"
        )
    num_classes = len(source.class_names)
    probabilities = None
    if loader.repeat_threshold > 0:
        rows, share = image_classes(
            source,
            num_classes,
            workdir=workdir,
            ignore_index=data.ignore_index,
            progress=progress,
        )
        probabilities = sampling_probabilities(rows, share, loader.repeat_threshold)
    device = config.augment.backend == "device"
    return _train_iterator(
        source,
        batch_size=batch_size,
        seed=config.seed,
        num_classes=num_classes,
        ignore_index=data.ignore_index,
        **({} if device else augment_options(config)),
        distance_maps=losses.needs_distance(config.loss.terms),
        invalid_to_ignore=data.invalid_to_ignore,
        num_workers=worker_count(config, workdir) if num_workers is None else num_workers,
        read_threads=loader.read_threads,
        prefetch=loader.prefetch,
        augment_on=config.augment.backend,
        canvas_size=canvas_size(config, source) if device else None,
        sample_probabilities=probabilities,
    )


def device_augment(config) -> AugmentSpec | None:
    """config.augment as an AugmentSpec when it runs in the train step."""
    if config.augment.backend != "device":
        return None
    return AugmentSpec(ignore_index=config.data.ignore_index, **augment_options(config))


def eval_batches(config, source, batch_size: int):
    """Padded evaluation batches of this process (batch_size: its share), with "valid"
    and each example's "size" (see jaxseg.data.pipeline.eval_batches)."""
    return _eval_batches(
        source,
        batch_size=batch_size,
        pad_to=tuple(config.eval.size),
        num_classes=len(source.class_names),
        ignore_index=config.data.ignore_index,
        shorter_side=config.eval.shorter_side,
        invalid_to_ignore=config.data.invalid_to_ignore,
        read_threads=config.loader.read_threads,
    )


def normalisation(config, source, *, workdir: str | None, progress: bool) -> tuple[tuple, tuple]:
    """(data.mean, data.std), those to compute (() or, for a channel count other than 3, left
    at the RGB defaults: jaxseg.config_checks) computed from `source`, the train split, once
    (cached in workdir; jaxseg.channel_stats)."""
    data = config.data
    todo = [
        key
        for key in ("mean", "std")
        if not data[key] or (data.channels != 3 and configs.stats_left_at_default(data, key))
    ]
    if not todo:
        return tuple(data.mean), tuple(data.std)
    try:
        mean, std = channel_stats(source, data.channels, workdir=workdir, progress=progress)
    except ValueError as e:  # images of another channel count or bit depth
        raise configs.ConfigError(str(e)) from e
    mean = mean if "mean" in todo else tuple(data.mean)
    std = std if "std" in todo else tuple(data.std)
    if progress:
        found = {"mean": mean, "std": std}
        shown = ", ".join(f"data.{k}=({', '.join(f'{v:.4f}' for v in found[k])})" for k in todo)
        print(f"computed from the train split (cached in {STATS_CACHE}): {shown}")
    return mean, std


def class_weights(config, source, *, workdir: str, progress: bool) -> jax.Array | None:
    """loss.class_weights, or weights computed from the train split (cached in workdir)."""
    num_classes = len(source.class_names)
    loss = config.loss
    if loss.class_weights and loss.class_weight_method:
        raise configs.ConfigError("set loss.class_weights or loss.class_weight_method, not both")
    weights = None
    if loss.class_weights:
        weights = np.asarray(loss.class_weights, np.float32)
    elif loss.class_weight_method:
        weights = compute_class_weights(
            source,
            num_classes,
            loss.class_weight_method,
            workdir=workdir,
            ignore_index=config.data.ignore_index,
            progress=progress,
        )
    if weights is not None and weights.shape != (num_classes,):
        raise configs.ConfigError(
            f"loss.class_weights has {weights.shape[0]} values for {num_classes} classes"
        )
    return None if weights is None else jnp.asarray(weights, jnp.float32)


# ------------------------------------------------------------------------ model, optimizer


def build_model(config, num_classes: int):
    """config.model's network for num_classes classes in config.dtype."""
    options = {k: v for k, v in config.model.items() if k not in ("name", "pretrained")}
    return _build_model(
        config.model.name, num_classes, dtype=configs.compute_dtype(config.dtype), **options
    )


def optimizer(config):
    """(lr schedule, optax transformation) as config.optim says.

    With optim.accumulate_steps = k > 1 the optimizer updates every k train steps and its
    schedule spans total_steps // k updates (warmup warmup_steps // k); the returned
    schedule maps a train step s to the learning rate of update s // k, for logging."""
    o = config.optim
    k = o.accumulate_steps
    if k < 1:
        raise configs.ConfigError(f"optim.accumulate_steps={k} needs 1 or more")
    if config.total_steps % k:
        raise configs.ConfigError(
            f"optim.accumulate_steps={k} does not divide total_steps={config.total_steps}: "
            "the last update would never be applied"
        )
    if o.head_lr_mult <= 0:
        raise configs.ConfigError(f"optim.head_lr_mult={o.head_lr_mult} must be positive")
    try:
        update_schedule = make_schedule(
            o.schedule,
            o.lr,
            config.total_steps // k,
            warmup_steps=o.warmup_steps // k,
            poly_power=o.poly_power,
            end_lr=o.end_lr,
        )
        tx = make_optimizer(
            o.name,
            update_schedule,
            momentum=o.momentum,
            nesterov=o.nesterov,
            b1=o.b1,
            b2=o.b2,
            weight_decay=o.weight_decay,
            grad_clip=o.grad_clip,
            skip_nonfinite=o.skip_nonfinite,
            head_lr_mult=o.head_lr_mult,
            accumulate_steps=k,
        )
    except ValueError as e:  # an unknown optim.name or optim.schedule
        raise configs.ConfigError(f"optim: {e}") from None
    schedule = update_schedule if k == 1 else (lambda step: update_schedule(step // k))
    return schedule, tx


# ---------------------------------------------------------------------------- step partials


def train_step(config, model, tx, schedule, class_weights, mesh=None):
    """steps.train_step bound to config.data and config.loss; jit it with the batch split
    over the data axis and the state donated. mesh: the crops' heights are split over its
    spatial axis, if it has one (config.mesh.spatial > 1)."""
    loss_terms = tuple((str(name), float(w)) for name, w in config.loss.terms)
    return functools.partial(
        steps.train_step,
        model=model,
        tx=tx,
        schedule=schedule,
        mean=config.data.mean,
        std=config.data.std,
        loss_terms=loss_terms,
        aux_weights=tuple((str(n), float(w)) for n, w in config.loss.aux_weights),
        ignore_index=config.data.ignore_index,
        class_weights=class_weights,
        keep_stats_if_nonfinite=config.optim.skip_nonfinite > 0,
        augment=device_augment(config),
        loss_options=tuple(
            (name, tuple(config.loss[name].items()))
            for name, _ in loss_terms
            if name in config.loss
        ),
        spatial_sharding=None if mesh is None else sharding.spatial_sharding(mesh),
    )


def inference_settings(config, devices: int = 1) -> inference.Settings:
    """config.eval as inference.Settings. Slide windows default to the training crop with a
    stride of two thirds of it; window_batch to eval.batch_size, a multiple of `devices`.
    eval.crf.enabled adds CRFParams from the eval.crf section (an invalid one is refused
    naming its key)."""
    ev = config.eval
    crop = tuple(ev.crop_size) or tuple(config.data.image_size)
    stride = tuple(ev.stride) or tuple(max(1, round(2 * c / 3)) for c in crop)
    window_batch = ev.window_batch or ev.batch_size
    if config.eval.mode == "slide" and window_batch % devices:
        raise configs.ConfigError(
            f"eval.window_batch={window_batch} does not split over {devices} devices; "
            f"use a multiple of {devices}"
        )
    crf = None
    if ev.crf.enabled:
        try:
            crf = CRFParams(**{k: v for k, v in ev.crf.items() if k != "enabled"})
        except CRFError as e:
            raise configs.ConfigError(
                f"eval.crf.{e.field}={ev.crf[e.field]!r}: {e.reason}"
            ) from None
    try:
        return inference.Settings(
            mode=ev.mode,
            crop_size=crop,
            stride=stride,
            scales=tuple(float(s) for s in ev.scales),
            flip=ev.flip,
            window_batch=window_batch,
            crf=crf,
        )
    except ValueError as e:
        raise configs.ConfigError(str(e)) from None


def eval_step(config, model, num_classes: int, mesh, settings: inference.Settings):
    """steps.eval_step bound to config.eval and `settings` (inference_settings); jit it with
    jaxseg.evaluation.jit_eval_step."""
    return functools.partial(
        steps.eval_step,
        model=model,
        num_classes=num_classes,
        mean=config.data.mean,
        std=config.data.std,
        ignore_index=config.data.ignore_index,
        boundary_tolerance=config.eval.boundary_tolerance,
        settings=settings,
        window_sharding=sharding.batch_sharding(mesh),
    )


def best_seed_index(config, path: str) -> int:
    """The replica of a seeds > 1 run in workdir `path` with the highest val mIoU in the last
    evaluation of its metrics.jsonl (0 when it holds none)."""
    names = [f"val/miou/seed{config.seed + i}" for i in range(config.seeds)]
    log = run_files.path(path, "metrics.jsonl")
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    scored = [r for r in rows if names[0] in r]
    if not scored:
        return 0
    return int(np.nanargmax([scored[-1][n] for n in names]))


def inference_variables(
    config, model, path: str, which: str, mesh, seed_index: int | None = None
) -> tuple[dict, int]:
    """({"params", "batch_stats"} replicated over mesh, step) of checkpoint `which` ("latest",
    "best" or a step) of the run in workdir `path`; no optimizer state is read. seed_index:
    the replica of a seeds > 1 run (jaxseg.seeds; default best_seed_index)."""
    if seed_index is not None and not 0 <= seed_index < config.seeds:
        raise configs.ConfigError(
            f"--seed_index={seed_index}: the run in {path} trained seeds={config.seeds}"
        )
    if config.seeds > 1 and seed_index is None:
        seed_index = best_seed_index(config, path)
    replicated = sharding.replicated(mesh)
    shapes = jax.eval_shape(
        lambda: model.init(
            jax.random.key(0),
            jnp.zeros((1, *config.data.image_size, config.data.channels)),
            train=False,
        )
    )
    target = {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}
    target = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), target
    )
    step = checkpoint.choose_step(path, str(which))
    replica = (seed_index, config.seeds) if config.seeds > 1 else None
    return checkpoint.restore_variables(path, step, target, replica), step


# ------------------------------------------------------------------------------- the build


@dataclasses.dataclass(frozen=True)
class Parts:
    """What a run is made of, each decided once (by build) from the config.

    config: the config with loader.num_workers and data.mean/std resolved (as the run saves
    it).
    train_step / eval_step: steps.train_step / steps.eval_step partials; jit them with the
    batch split over the data axis (train: state donated; eval: totals donated).
    init_state: rng -> TrainState (jit it with out_shardings=abstract_state's shardings).
    The device augmentation (config.augment.backend=device) is bound into train_step.
    abstract_state: the TrainState's ShapeDtypeStructs, replicated over the mesh: the
    target of a restore, no array allocated.
    """

    config: ml_collections.ConfigDict
    train_source: Any
    val_source: Any
    class_names: tuple[str, ...]
    model: Any
    schedule: Any
    tx: Any
    class_weights: jax.Array | None
    inference: inference.Settings
    train_step: Callable
    eval_step: Callable
    init_state: Callable
    abstract_state: Any


def make_mesh(config):
    """The run's device mesh (jaxseg.sharding.make_mesh) with config.mesh.spatial devices
    sharing each crop; a spatial count the devices or the crop cannot take is a ConfigError."""
    config_checks.check_mesh(config, jax.device_count())
    return sharding.make_mesh(spatial=config.mesh.spatial)


def build(config, *, mesh, workdir: str | None = None, progress: bool = False) -> Parts:
    """The Parts of the run config describes on mesh, validated as they are built: an option
    that would not act or a value a part refuses raises ConfigError naming its key, before
    anything is written. workdir: the run's (the worker count it started with; the class
    weight cache)."""
    config_checks.check_options(config)
    try:
        sharding.check_batch_size(config.batch_size, mesh)
        sharding.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
    except ValueError as e:
        raise configs.ConfigError(str(e)) from None
    schedule, tx = optimizer(config)
    settings = inference_settings(config, mesh.devices.size)
    config = config.copy_and_resolve_references()
    config.loader.num_workers = worker_count(config, workdir)
    train_source, val_source = make_source(config, "train"), make_source(config, "val")
    # Resolved here, so the run saves (and evaluate, predict, export read) the figures used.
    config.data.mean, config.data.std = normalisation(
        config, train_source, workdir=workdir, progress=progress
    )
    class_names = tuple(train_source.class_names)
    model = build_model(config, len(class_names))
    init_state = functools.partial(
        create_train_state,
        model,
        tx,
        image_shape=(*config.data.image_size, config.data.channels),
    )
    replicated = sharding.replicated(mesh)
    abstract_state = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
        jax.eval_shape(init_state, jax.random.key(0)),  # tx.init refuses a bad head_lr_mult
    )
    weights = class_weights(config, train_source, workdir=workdir, progress=progress)
    return Parts(
        config=config,
        train_source=train_source,
        val_source=val_source,
        class_names=class_names,
        model=model,
        schedule=schedule,
        tx=tx,
        class_weights=weights,
        inference=settings,
        train_step=train_step(config, model, tx, schedule, weights, mesh),
        eval_step=eval_step(config, model, len(class_names), mesh, settings),
        init_state=init_state,
        abstract_state=abstract_state,
    )
