"""Train a segmentation model; evaluate every N steps and at the end; checkpoint and resume.

    python -m jaxseg.train --config experiments/unet.py:quick --workdir runs/unet_quick
    python -m jaxseg.train --config experiments/unet.py --config.optim.lr=0.02

Running the same command in the same workdir resumes from the newest checkpoint,
with the same data stream, and ends with the same parameters as a run never
interrupted. The workdir holds config.json, metrics.jsonl, TensorBoard events and
checkpoints/.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import checkpoint, configs, losses, metrics, sharding, steps, writer
from jaxseg.class_weights import class_weights as compute_class_weights
from jaxseg.data import make_source
from jaxseg.data.pipeline import eval_batches, train_iterator
from jaxseg.models import build_model
from jaxseg.models.pretrained import load_pretrained
from jaxseg.optim import make_optimizer, make_schedule
from jaxseg.state import count_params, create_train_state


def evaluate(
    eval_fn,
    state,
    source,
    *,
    batch_size: int,
    pad_to: tuple[int, int],
    ignore_index: int,
    mesh,
    num_classes: int,
    calibration_bins: int = 15,
    shorter_side: int = 0,
    invalid_to_ignore: bool = False,
) -> dict:
    """Scores over the whole split from counts summed on device (jaxseg.metrics)."""
    totals = jax.device_put(
        steps.empty_totals(num_classes, calibration_bins), sharding.replicated(mesh)
    )
    batches = eval_batches(
        source,
        batch_size=batch_size,
        pad_to=pad_to,
        num_classes=num_classes,
        ignore_index=ignore_index,
        shorter_side=shorter_side,
        invalid_to_ignore=invalid_to_ignore,
    )
    for batch in batches:
        totals = eval_fn(state, sharding.to_global(batch, mesh), totals)
    totals = jax.device_get(totals)
    return metrics.scores(
        np.asarray(totals["confusion"], np.int64),
        boundary=np.asarray(totals["boundary"], np.int64),
        calibration=np.asarray(totals["calibration"], np.float64),
    )


def val_metrics(scores: dict, class_names: tuple[str, ...]) -> dict:
    """Flat metrics.jsonl names: val/miou, val/pixel_acc, ..., val/iou/<class>, val/ece/<class>."""
    means = ("miou", "pixel_acc", "mean_acc", "fwiou", "mdice", "mboundary_iou", "ece_all")
    flat = {f"val/{k}": scores[k] for k in means if k in scores}
    for k, name in enumerate(class_names):
        for metric in ("iou", "dice", "precision", "acc", "boundary_iou", "ece"):
            if metric in scores:
                flat[f"val/{'recall' if metric == 'acc' else metric}/{name}"] = scores[metric][k]
    return flat


def model_and_optimizer(config, num_classes: int):
    """(model, lr schedule, optax transformation) as config.model and config.optim say;
    shared with jaxseg.benchmark so both time and train the same thing."""
    model = build_model(
        config.model.name,
        num_classes,
        dtype=configs.compute_dtype(config.dtype),
        **{k: v for k, v in config.model.items() if k != "name"},
    )
    o = config.optim
    schedule = make_schedule(
        o.schedule,
        o.lr,
        config.total_steps,
        warmup_steps=o.warmup_steps,
        poly_power=o.poly_power,
        end_lr=o.end_lr,
    )
    tx = make_optimizer(
        o.name,
        schedule,
        momentum=o.momentum,
        nesterov=o.nesterov,
        b1=o.b1,
        b2=o.b2,
        weight_decay=o.weight_decay,
        grad_clip=o.grad_clip,
    )
    return model, schedule, tx


def jitted_train_step(config, model, tx, schedule, class_weights, mesh):
    """steps.train_step bound to config.data and config.loss, jitted once: replicated
    state (donated) and rng, the batch split over the mesh's data axis."""
    data = config.data
    loss_terms = tuple((str(name), float(w)) for name, w in config.loss.terms)
    unknown = sorted({name for name, _ in loss_terms} - set(losses.LOSSES))
    if unknown:
        raise ValueError(f"loss.terms names {unknown}; valid: {', '.join(sorted(losses.LOSSES))}")
    replicated = sharding.replicated(mesh)
    return jax.jit(
        functools.partial(
            steps.train_step,
            model=model,
            tx=tx,
            schedule=schedule,
            mean=data.mean,
            std=data.std,
            loss_terms=loss_terms,
            aux_weights=tuple((str(n), float(w)) for n, w in config.loss.aux_weights),
            ignore_index=data.ignore_index,
            class_weights=class_weights,
            label_smoothing=config.loss.label_smoothing,
        ),
        in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


def train_and_evaluate(config, workdir: str, *, stop_after: int | None = None) -> dict:
    """Runs (or resumes) the run that config describes in workdir.

    Returns {"step": last step, "state": the TrainState, "scores": the last val scores}.

    stop_after: return after this many steps of this invocation, with a checkpoint, as a
    preempted job would (used to test resume).
    """
    # ---- Set-up: workdir, resolved config, mesh -------------------------------------
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(configs.to_json(config))
    mesh = sharding.make_mesh()
    replicated = sharding.replicated(mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    local_batch = sharding.check_batch_size(config.batch_size, mesh)
    local_eval_batch = sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")

    # ---- Data ------------------------------------------------------------------------
    data = config.data
    data_options = {k: v for k, v in data.items() if k != "name"} | {"seed": config.seed}
    train_source = make_source(data.name, "train", **data_options)
    val_source = make_source(data.name, "val", **data_options)
    class_names = tuple(train_source.class_names)
    num_classes = len(class_names)
    train_iter = train_iterator(
        train_source,
        batch_size=local_batch,
        seed=config.seed,
        num_classes=num_classes,
        ignore_index=data.ignore_index,
        **configs.augment_options(data),
        distance_maps=any(name == "boundary" for name, _ in config.loss.terms),
        invalid_to_ignore=data.invalid_to_ignore,
        num_workers=data.num_workers,
        read_threads=data.read_threads,
        prefetch=data.prefetch,
    )

    # ---- Model and optimizer -------------------------------------------------------------
    model, schedule, tx = model_and_optimizer(config, num_classes)

    # ---- State: initialise replicated, then resume, or load weights only ---------------
    root_rng = jax.random.key(config.seed)
    init_rng, step_rng = jax.random.split(root_rng)
    image_shape = (*data.image_size, 3)
    init = jax.jit(
        functools.partial(create_train_state, model, tx, image_shape=image_shape),
        out_shardings=replicated,
    )
    state = init(init_rng)
    manager = checkpoint.make_manager(
        os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints
    )
    state, start_step = checkpoint.restore_latest(manager, state, train_iter)
    if start_step == 0 and config.model.pretrained:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        log = print if is_main else (lambda *a: None)
        variables = load_pretrained(model, jax.device_get(variables), config.model.pretrained, log)
        variables = jax.device_put(variables, replicated)
        state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
    if start_step == 0 and config.init_from:
        state = checkpoint.load_weights(config.init_from, state)
    if is_main:
        print(
            f"jaxseg: {config.model.name} with {count_params(state.params):,} params on "
            f"{mesh.devices.size} {jax.devices()[0].platform} device(s); "
            f"{len(train_source)} train / {len(val_source)} val examples; workdir {workdir}"
            + (f"; resumed at step {start_step}" if start_step else ""),
            flush=True,
        )

    # ---- Steps: jitted once, explicit shardings, the train state donated --------------
    class_weights = jnp.asarray(config.loss.class_weights) if config.loss.class_weights else None
    if config.loss.class_weight_method:
        if class_weights is not None:
            raise ValueError("set loss.class_weights or loss.class_weight_method, not both")
        class_weights = jnp.asarray(
            compute_class_weights(
                train_source,
                num_classes,
                config.loss.class_weight_method,
                workdir=workdir,
                ignore_index=data.ignore_index,
                progress=is_main,
            )
        )
        if is_main:
            print(
                f"class weights ({config.loss.class_weight_method}): {np.round(class_weights, 3)}"
            )
    if class_weights is not None and class_weights.shape != (num_classes,):
        raise ValueError(
            f"loss.class_weights has {class_weights.shape[0]} values for {num_classes} classes"
        )
    train_fn = jitted_train_step(config, model, tx, schedule, class_weights, mesh)
    eval_fn = jax.jit(
        functools.partial(
            steps.eval_step,
            model=model,
            num_classes=num_classes,
            mean=data.mean,
            std=data.std,
            ignore_index=data.ignore_index,
            boundary_tolerance=config.boundary_tolerance,
        ),
        in_shardings=(replicated, batch_sharding, replicated),
        out_shardings=replicated,
        donate_argnums=2,
    )
    run_eval = functools.partial(
        evaluate,
        eval_fn,
        source=val_source,
        batch_size=local_eval_batch,
        pad_to=tuple(data.eval_size),
        ignore_index=data.ignore_index,
        mesh=mesh,
        num_classes=num_classes,
        calibration_bins=config.calibration_bins,
        shorter_side=data.eval_shorter_side,
        invalid_to_ignore=data.invalid_to_ignore,
    )

    # ---- Loop ------------------------------------------------------------------------
    # SIGTERM (preemption, scancel, Ctrl-C'd launchers): checkpoint, then exit cleanly.
    stop_requested = []
    previous_handler = signal.getsignal(signal.SIGTERM)
    if is_main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop_requested.append(True))
    log = writer.MetricWriter(workdir, resume_step=start_step, enabled=is_main)
    bar = writer.progress_bar(config.total_steps, start_step, enabled=is_main)
    pending, window_start, window_time = [], start_step, None
    scores = None
    step = start_step
    while step < config.total_steps:
        batch = sharding.to_global(next(train_iter), mesh)
        state, step_metrics = train_fn(state, batch, step_rng)
        pending.append(step_metrics)
        step += 1
        if window_time is None:  # leave compilation out of images/s (not out of the loss)
            jax.block_until_ready(state)
            window_start, window_time = step, time.perf_counter()
        bar.update(1)

        last = step == config.total_steps
        if pending and (step % config.log_every == 0 or last):
            fetched = jax.device_get(pending)
            elapsed = time.perf_counter() - window_time
            images = (step - window_start) * config.batch_size
            img_per_sec = images / elapsed if images else float("nan")
            loss = float(np.mean([m["loss"] for m in fetched]))
            log.write(
                step,
                {
                    "train/loss": loss,
                    "train/lr": fetched[-1]["lr"],
                    "train/grad_norm": float(np.mean([m["grad_norm"] for m in fetched])),
                    "train/img_per_sec": img_per_sec,
                },
            )
            bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{img_per_sec:.1f}")
            pending, window_start, window_time = [], step, time.perf_counter()
            if not np.isfinite(loss):
                raise FloatingPointError(f"train/loss is {loss} at step {step}; stopping")

        scores = None
        if (config.eval_every and step % config.eval_every == 0) or last:
            scores = run_eval(state)
            log.write(step, val_metrics(scores, class_names))
            bar.write(
                f"step {step}: val mIoU {scores['miou']:.4f}  pixel acc {scores['pixel_acc']:.4f}"
            )
        stopping = bool(stop_requested) or (
            stop_after is not None and step - start_step >= stop_after
        )
        saving = (config.checkpoint_every and step % config.checkpoint_every == 0) or last
        if saving or stopping:
            flat = {checkpoint.BEST_METRIC: scores["miou"]} if scores else None
            checkpoint.save(manager, step, state, train_iter, flat)
        if scores or saving:  # images/s measures training only
            window_start, window_time = step, time.perf_counter()
        if stopping:
            bar.write(f"stopping at step {step}: checkpoint saved in {workdir}/checkpoints")
            break
    bar.close()

    # ---- End: wait for checkpoints, report ------------------------------------------------
    if step == config.total_steps and scores is None:  # resumed a finished run
        scores = run_eval(state)
    manager.wait_until_finished()
    manager.close()
    log.close()
    if is_main_thread():
        signal.signal(signal.SIGTERM, previous_handler)
    if scores is not None and is_main:
        print(f"validation at step {step}:\n{metrics.format_table(scores, class_names)}")
    return {"step": step, "state": state, "scores": scores}


def is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = configs.parse_args(argv)
        if args.extra:
            raise configs.ConfigError(f"unknown argument(s) {' '.join(args.extra)}")
    except configs.ConfigError as e:
        print(f"jaxseg.train: error: {e}", file=sys.stderr)
        sys.exit(2)
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags
    if os.environ.get("JAXSEG_MULTIHOST") == "1":  # set by launch.sh
        jax.distributed.initialize()
    train_and_evaluate(args.config, args.workdir)


if __name__ == "__main__":
    main()
