"""The one place that turns a config into parts: sources, model, optimizer, iterators, class
weights, inference settings and the step partials. Entry points (train, benchmark,
evaluate, predict, export) build from here and jit the partials themselves.

Options the chosen model or dataset does not take are refused here, naming the field:
a config field set away from base_config()'s default must act.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg import augment, checkpoint, configs, inference, losses, metrics, sharding, steps, writer
from jaxseg import workdir as run_files
from jaxseg.class_weights import class_weights as compute_class_weights
from jaxseg.class_weights import image_classes
from jaxseg.crf import CRFError, CRFParams
from jaxseg.data import make_source as _make_source
from jaxseg.data import options_of
from jaxseg.data.pipeline import eval_batches as _eval_batches
from jaxseg.data.pipeline import sampling_probabilities
from jaxseg.data.pipeline import train_iterator as _train_iterator
from jaxseg.models import MODELS
from jaxseg.models import build_model as _build_model
from jaxseg.optim import make_optimizer, make_schedule

# data.* fields the pipeline reads whatever the dataset; the rest belong to datasets.
PIPELINE_DATA_FIELDS = (
    "name",
    "image_size",
    "scale_range",
    "cat_max_ratio",
    "hflip",
    "vflip",
    "rot90",
    "photometric",
    "blur_prob",
    "elastic_sigma",
    "elastic_grid",
    "augment_on",
    "canvas_size",
    "repeat_threshold",
    "invalid_to_ignore",
    "num_workers",
    "read_threads",
    "prefetch",
    "ignore_index",
    "mean",
    "std",
    "max_pixels",  # also predict's limit on untrusted images
)
MODEL_FIELDS = ("name", "pretrained")  # every model takes these
SLIDE_FIELDS = ("crop_size", "stride", "window_batch")
# eval.crf_<field> for each field of jaxseg.crf.CRFParams: act only with eval.crf=True.
CRF_FIELDS = tuple(f"crf_{f.name}" for f in dataclasses.fields(CRFParams))
# The eval.* fields that shape inference itself (predict, export, the Segmenter API).
INFERENCE_FIELDS = tuple(
    f"eval.{k}" for k in ("mode", *SLIDE_FIELDS, "scales", "flip", "crf", *CRF_FIELDS)
)


def _changed(section: str, config: ml_collections.ConfigDict) -> list[str]:
    """Fields of config.<section> that differ from base_config()'s defaults."""
    defaults = configs.base_config()[section]
    return [k for k, v in config[section].items() if v != defaults[k]]


def check_options(config: ml_collections.ConfigDict) -> None:
    """Refuses, with ConfigError naming the field, a model, data or eval option that the
    chosen model, dataset or eval mode would not use, and unknown loss names."""
    name = config.model.name
    if name not in MODELS:
        raise configs.ConfigError(
            f"model.name={name!r} is unknown; valid: {', '.join(sorted(MODELS))}"
        )
    takes = set(MODEL_FIELDS) | set(MODELS[name].__dataclass_fields__)
    unused = [k for k in _changed("model", config) if k not in takes]
    if unused:
        valid = sorted(k for k in takes if k in config.model)
        raise configs.ConfigError(
            f"model.{unused[0]} is set but model {name!r} does not take it "
            f"(it takes model.{', model.'.join(valid)})"
        )
    try:
        dataset_options = set(options_of(config.data.name))
    except KeyError as e:
        raise configs.ConfigError(f"data.name: {e.args[0]}") from None
    takes = set(PIPELINE_DATA_FIELDS) | dataset_options
    unused = [k for k in _changed("data", config) if k not in takes]
    if unused:
        own = sorted(k for k in dataset_options if k in config.data)
        raise configs.ConfigError(
            f"data.{unused[0]} is set but dataset {config.data.name!r} does not take it"
            + (f" (its own fields: data.{', data.'.join(own)})" if own else "")
        )
    _check_data(config)
    _check_loss(config.loss)
    optimizer(config)  # names an unknown optim.name or optim.schedule
    if config.eval.mode == "whole":
        unused = [k for k in _changed("eval", config) if k in SLIDE_FIELDS]
        if unused:
            raise configs.ConfigError(
                f"eval.{unused[0]} is set but eval.mode is 'whole'; set eval.mode=slide"
            )
    if not config.eval.crf:
        unused = [k for k in _changed("eval", config) if k in CRF_FIELDS]
        if unused:
            raise configs.ConfigError(
                f"eval.{unused[0]} is set but eval.crf is False; set eval.crf=True"
            )
    inference_settings(config)  # names an invalid eval value before anything is built


def trained_config(workdir: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """A run's saved config.json with {dotted key: value} overrides applied and checked
    (types, and options the model, dataset or eval mode would not use)."""
    config = run_files.read_config(workdir)
    with config.unlocked():
        configs.apply_overrides(config, dict(overrides or {}))
    configs.check_types(config)
    check_options(config)
    return config


def _check_data(config) -> None:
    """Augmentation and sampling options: each must act where it is set."""
    data = config.data
    if data.augment_on not in AUGMENT_ON:
        raise configs.ConfigError(
            f"data.augment_on={data.augment_on!r} is unknown; valid: {', '.join(AUGMENT_ON)}"
        )
    changed = _changed("data", config)
    if "elastic_grid" in changed and not data.elastic_sigma:
        raise configs.ConfigError("data.elastic_grid is set but data.elastic_sigma is 0 (off)")
    if data.elastic_grid < 2:
        raise configs.ConfigError(f"data.elastic_grid={data.elastic_grid} needs 2 or more")
    if not 0.0 <= data.repeat_threshold <= 1.0:
        raise configs.ConfigError(
            f"data.repeat_threshold={data.repeat_threshold} is a share of images, in [0, 1]"
        )
    if data.num_workers < -1:
        raise configs.ConfigError(f"data.num_workers={data.num_workers}: 0 or more, or -1 (auto)")
    if data.augment_on == "host":
        if data.canvas_size:
            raise configs.ConfigError(
                "data.canvas_size is set but data.augment_on is 'host'; set augment_on=device"
            )
        return
    if data.cat_max_ratio < 1.0:
        raise configs.ConfigError(
            "data.cat_max_ratio redraws crops on the host; with data.augment_on='device' "
            "leave it at 1.0"
        )
    if uses_distance_maps(config):
        raise configs.ConfigError(
            "the boundary loss's distance maps are made on the host after augmentation; "
            "use data.augment_on='host' with it"
        )


def _check_loss(loss) -> None:
    """Loss names, their options and class weights: each must act."""
    names = [str(name) for name, _ in loss.terms]
    unknown = sorted(set(names) - set(losses.LOSSES))
    if unknown:
        raise configs.ConfigError(
            f"loss.terms names {unknown}; valid: {', '.join(sorted(losses.LOSSES))}"
        )
    for entry in loss.options:
        if len(entry) != 2 or not isinstance(entry[1], tuple | list):
            raise configs.ConfigError(
                f"loss.options entry {entry!r} is not (loss name, ((option, value), ...))"
            )
        name, pairs = entry
        if name not in names:
            raise configs.ConfigError(
                f"loss.options sets {name!r}, which is not in loss.terms {tuple(names)}"
            )
        takes = tuple(t for t in losses.options_of(name) if (name, t) != ("ce", "label_smoothing"))
        for pair in pairs:
            if len(pair) != 2 or pair[0] not in takes:
                raise configs.ConfigError(
                    f"loss.options: {name!r} takes {', '.join(takes) or 'no options'}; got {pair!r}"
                )
    weighted = [n for n in names if n in losses.CLASS_WEIGHTED]
    if (loss.class_weights or loss.class_weight_method) and not weighted:
        raise configs.ConfigError(
            f"class weights act on the {', '.join(sorted(losses.CLASS_WEIGHTED))} terms, and "
            f"loss.terms {tuple(names)} has none of them"
        )
    if loss.label_smoothing and "ce" not in names:
        raise configs.ConfigError("loss.label_smoothing acts on the ce term, not in loss.terms")


# --------------------------------------------------------------------------------- data


def make_source(config, split: str):
    """The `split` ("train", "val" or "test") of config.data's dataset."""
    data = config.data
    options = dict(data.items()) | {"seed": config.seed, "eval_size": tuple(config.eval.size)}
    options.pop("name")
    try:
        return _make_source(data.name, split, **options)
    except (ValueError, KeyError, OSError) as e:  # paths, names, lists: the user's to fix
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise configs.ConfigError(message) from e


AUGMENT_ON = ("host", "device")


def worker_count(config, workdir: str | None = None) -> int:
    """data.num_workers, with -1 (auto) resolved: the count a run in `workdir` started with
    (grain cannot restore an iterator's state into another worker count), else
    AUTO_WORKERS(os.cpu_count())."""
    workers = config.data.num_workers
    if workers >= 0:
        return workers
    if workdir is not None and run_files.has_config(workdir):
        saved = run_files.read_config(workdir).data.num_workers
        if saved >= 0:
            return saved
    return auto_workers(os.cpu_count() or 1)


def auto_workers(cores: int) -> int:
    """The grain worker processes data.num_workers=-1 picks on a machine with `cores` CPU
    cores: none up to 4 cores (there the model's step needs the cores, and the main
    process's read threads keep the input stall near 1 %: docs/benchmarks.md), else one
    per core but two (the trainer and the transfer thread keep theirs), at most 32."""
    return 0 if cores <= 4 else min(cores - 2, 32)


def augment_options(data: ml_collections.ConfigDict) -> dict:
    """The training-augmentation keyword arguments of jaxseg.data.pipeline.train_iterator."""
    return {
        "crop_size": tuple(data.image_size),
        "scale_range": tuple(data.scale_range),
        "cat_max_ratio": data.cat_max_ratio,
        "hflip": data.hflip,
        "vflip": data.vflip,
        "rot90": data.rot90,
        "photometric": data.photometric,
        "blur_prob": data.blur_prob,
        "elastic_sigma": data.elastic_sigma,
        "elastic_grid": data.elastic_grid,
    }


def uses_distance_maps(config) -> bool:
    return any(name == "boundary" for name, _ in config.loss.terms)


def canvas_size(config, source) -> tuple[int, int]:
    """data.canvas_size, or the size of the first training example."""
    if config.data.canvas_size:
        return tuple(config.data.canvas_size)
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
    data = config.data
    num_classes = len(source.class_names)
    probabilities = None
    if data.repeat_threshold > 0:
        rows, share = image_classes(
            source,
            num_classes,
            workdir=workdir,
            ignore_index=data.ignore_index,
            progress=progress,
        )
        probabilities = sampling_probabilities(rows, share, data.repeat_threshold)
    device = data.augment_on == "device"
    return _train_iterator(
        source,
        batch_size=batch_size,
        seed=config.seed,
        num_classes=num_classes,
        ignore_index=data.ignore_index,
        **({} if device else augment_options(data)),
        distance_maps=uses_distance_maps(config),
        invalid_to_ignore=data.invalid_to_ignore,
        num_workers=worker_count(config, workdir) if num_workers is None else num_workers,
        read_threads=data.read_threads,
        prefetch=data.prefetch,
        augment_on=data.augment_on,
        canvas_size=canvas_size(config, source) if device else None,
        sample_probabilities=probabilities,
    )


def device_augment(config) -> augment.Options | None:
    """config.data's augmentation as jaxseg.augment.Options when it runs in the train step."""
    data = config.data
    if data.augment_on != "device":
        return None
    options = augment_options(data)
    options.pop("cat_max_ratio")  # refused on the device by check_options unless 1.0
    return augment.Options(ignore_index=data.ignore_index, **options)


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
        read_threads=config.data.read_threads,
    )


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


# Config values that defer to the model's own default (base_config says which models have
# which): the one place a per-model default lives is the model.
MODEL_DEFAULT = {"backbone": "", "output_stride": 0, "decoder": "", "pretrain_size": 0}


def build_model(config, num_classes: int):
    """config.model's network for num_classes classes in config.dtype."""
    options = {
        k: v
        for k, v in config.model.items()
        if k not in MODEL_FIELDS and not (k in MODEL_DEFAULT and v == MODEL_DEFAULT[k])
    }
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
    if o.head_lr_mult != 1.0 and "backbone" not in MODELS[config.model.name].__dataclass_fields__:
        raise configs.ConfigError(
            f"optim.head_lr_mult={o.head_lr_mult} is set but model {config.model.name!r} has "
            "no backbone/head split"
        )
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


def model_and_optimizer(config, num_classes: int):
    """(model, lr schedule, optax transformation) as config.model and config.optim say."""
    schedule, tx = optimizer(config)
    return build_model(config, num_classes), schedule, tx


# ---------------------------------------------------------------------------- step partials


def train_step(config, model, tx, schedule, class_weights):
    """steps.train_step bound to config.data and config.loss; jit it with the batch split
    over the data axis and the state donated."""
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
        label_smoothing=config.loss.label_smoothing,
        keep_stats_if_nonfinite=config.optim.skip_nonfinite > 0,
        augment=device_augment(config),
        loss_options=tuple(
            (str(n), tuple(tuple(o) for o in opts)) for n, opts in config.loss.options
        ),
    )


def inference_settings(config, devices: int = 1) -> inference.Settings:
    """config.eval as inference.Settings. Slide windows default to the training crop with a
    stride of two thirds of it; window_batch to eval.batch_size, a multiple of `devices`.
    eval.crf=True adds CRFParams from the eval.crf_* fields (an invalid one is refused
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
    if ev.crf:
        try:
            crf = CRFParams(**{k[len("crf_") :]: ev[k] for k in CRF_FIELDS})
        except CRFError as e:
            raise configs.ConfigError(
                f"eval.crf_{e.field}={ev['crf_' + e.field]!r}: {e.reason}"
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


def eval_step(config, model, num_classes: int, mesh):
    """steps.eval_step bound to config.eval; jit it with (replicated variables, batch split
    over the data axis, replicated totals donated)."""
    settings = inference_settings(config, mesh.devices.size)
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
    batches = eval_batches(config, source, local_batch)
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


def inference_variables(config, model, path: str, which: str, mesh) -> tuple[dict, int]:
    """({"params", "batch_stats"} replicated over mesh, step) of checkpoint `which` ("latest",
    "best" or a step) of the run in workdir `path`; no optimizer state is read."""
    replicated = sharding.replicated(mesh)
    shapes = jax.eval_shape(
        lambda: model.init(
            jax.random.key(0), jnp.zeros((1, *config.data.image_size, 3)), train=False
        )
    )
    target = {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}
    target = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), target
    )
    step = checkpoint.choose_step(path, str(which))
    return checkpoint.restore_variables(path, step, target), step
