"""Train a segmentation model; evaluate every N steps and at the end; checkpoint and resume.

    python -m jaxseg.train --config experiments/unet.py:quick --workdir runs/unet_quick
    python -m jaxseg.train --config experiments/unet.py --config.optim.lr=0.02

Running the same command in the same workdir resumes from the newest checkpoint,
with the same data stream, and ends with the same parameters as a run never
interrupted. The workdir holds config.json, dataset.json (class names, palette), metrics.jsonl,
TensorBoard events and checkpoints/: jaxseg.evaluate, predict and export read it back.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
import time

import jax
import numpy as np
from absl import flags

from jaxseg import checkpoint, cli, configs, metrics, recipe, sharding, writer
from jaxseg import workdir as run_files
from jaxseg.models.pretrained import load_pretrained
from jaxseg.state import count_params, create_train_state

STOP_CHECK_EVERY = 5  # steps between the processes' collective stop decisions


def train_and_evaluate(
    config, workdir: str, *, stop_after: int | None = None, allow_config_change: bool = False
) -> dict:
    """Runs (or resumes) the run that config describes in workdir.

    Returns {"step": last step, "state": the TrainState, "scores": the last val scores}.
    Whatever happens, everything the run opened (lock, checkpoint manager, writers, data
    iterator and its workers, SIGTERM handler) is released when it returns or raises.

    stop_after: return after this many steps of this invocation, with a checkpoint, as a
    preempted job would (used to test resume). allow_config_change: resume a workdir whose
    saved config trains something else (the change is recorded in the workdir).
    """
    with contextlib.ExitStack() as cleanup:
        return _train(config, workdir, cleanup, stop_after, allow_config_change)


def _train(config, workdir, cleanup, stop_after, allow_config_change) -> dict:
    # ---- Set-up: options, lock, mesh, data -------------------------------------------------
    recipe.check_options(config)
    is_main = jax.process_index() == 0
    mesh = sharding.make_mesh()
    replicated = sharding.replicated(mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    local_batch = sharding.check_batch_size(config.batch_size, mesh)
    sharding.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
    data = config.data
    train_source = recipe.make_source(config, "train")
    val_source = recipe.make_source(config, "val")
    class_names = tuple(train_source.class_names)
    num_classes = len(class_names)
    # loader.num_workers=-1 resolved once (and saved so): grain restores an iterator's state
    # only into the same worker count.
    config = config.copy_and_resolve_references()
    config.loader.num_workers = recipe.worker_count(config, workdir)
    train_iter = recipe.train_iterator(
        config, train_source, local_batch, workdir=workdir, progress=is_main
    )
    cleanup.callback(getattr(train_iter, "close", lambda: None))  # threads, worker processes
    if is_main:  # one run per workdir (nothing is written there before); stale locks taken
        cleanup.callback(run_files.RunLock(workdir).release)

    # ---- Model and optimizer -------------------------------------------------------------
    model, schedule, tx = recipe.model_and_optimizer(config, num_classes)

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
        run_files.path(workdir, "checkpoints"), keep=config.keep_checkpoints
    )
    cleanup.callback(manager.close)  # waits for a save in flight
    say = print if is_main else (lambda *a, **k: None)
    resumable = manager.latest_step()
    if resumable is not None and run_files.has_config(workdir):
        changes = run_files.check_resume_config(workdir, config, resumable, allow_config_change)
        if changes:
            say(f"resuming with changed settings: {', '.join(changes)} (config_changes.jsonl)")
    state, start_step = checkpoint.restore_latest(manager, state, train_iter, log=say)
    # The workdir alone rebuilds the model and labels its output (jaxseg.workdir).
    if is_main:
        run_files.write(workdir, config, train_source)
    if start_step == 0 and config.model.pretrained:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        variables = load_pretrained(model, jax.device_get(variables), config.model.pretrained, say)
        variables = jax.device_put(variables, replicated)
        state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
    if start_step == 0 and config.init_from:
        state = checkpoint.load_weights(config.init_from, state)
    say(
        f"jaxseg: {config.model.name} with {count_params(state.params):,} params on "
        f"{mesh.devices.size} {jax.devices()[0].platform} device(s); "
        f"{len(train_source)} train / {len(val_source)} val examples; workdir {workdir}"
        + (f"; resumed at step {start_step}" if start_step else ""),
        flush=True,
    )

    # ---- Steps: jitted once, explicit shardings, the train state donated --------------
    class_weights = recipe.class_weights(config, train_source, workdir=workdir, progress=is_main)
    if class_weights is not None and config.loss.class_weight_method:
        say(f"class weights ({config.loss.class_weight_method}): {np.round(class_weights, 3)}")
    train_fn = jax.jit(
        recipe.train_step(config, model, tx, schedule, class_weights),
        in_shardings=(replicated, batch_sharding, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    # Evaluation is jaxseg.inference with config.eval (whole, slide, TTA), as in evaluate.
    eval_fn = jax.jit(
        recipe.eval_step(config, model, num_classes, mesh),
        in_shardings=(replicated, batch_sharding, replicated),
        out_shardings=replicated,
        donate_argnums=2,
    )

    def run_eval(state):
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        return recipe.evaluate(eval_fn, variables, config, val_source, mesh)

    # ---- Loop ------------------------------------------------------------------------
    # SIGTERM (preemption, scancel, Ctrl-C'd launchers): checkpoint, then exit cleanly.
    stop_requested = []
    if is_main_thread():
        cleanup.callback(signal.signal, signal.SIGTERM, signal.getsignal(signal.SIGTERM))
        signal.signal(signal.SIGTERM, lambda *_: stop_requested.append(True))
    log = writer.MetricWriter(workdir, resume_step=start_step, enabled=is_main)
    cleanup.callback(log.close)
    bar = writer.progress_bar(config.total_steps, start_step, enabled=is_main)
    cleanup.callback(bar.close)
    # The steps since the last log line, as host floats; saved with each checkpoint, so the
    # first line after a resume averages the same steps as an uninterrupted run's.
    carried = checkpoint.restore_log(manager, start_step) if start_step else None
    carried = carried or {"steps": [], "in_a_row": 0, "skipped": 0}
    window, in_a_row, skipped = carried["steps"], carried["in_a_row"], carried["skipped"]
    pending, window_start, window_time = [], start_step, None
    last_good = manager.latest_step()  # the newest checkpoint of a finite state
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
        # A SIGTERM reaches one host first: every process decides together, at a fixed
        # cadence, so all save the same step (one stopping alone would hang the others in
        # their next collective). One process checks every step.
        stopping = stop_after is not None and step - start_step >= stop_after
        if jax.process_count() == 1 or step % STOP_CHECK_EVERY == 0:
            stopping = sharding.any_process(bool(stop_requested)) or stopping
        saving = (config.checkpoint_every and step % config.checkpoint_every == 0) or last
        logging_now = step % config.log_every == 0 or last
        if pending and (logging_now or saving or stopping):
            # The steps' finite flags, read at the log cadence and before any save: a state
            # that saw a non-finite loss or gradient is never checkpointed.
            fetched, pending = jax.device_get(pending), []
            for offset, m in enumerate(fetched):
                in_a_row = 0 if m["finite"] else in_a_row + 1
                skipped += not m["finite"]
                if in_a_row > config.optim.skip_nonfinite:  # optax would apply the next
                    bad = step - len(fetched) + offset + 1
                    raise FloatingPointError(
                        f"non-finite loss or gradient at step {bad} (loss {float(m['loss'])}"
                        + (
                            f", after {in_a_row - 1} skipped in a row: optim.skip_nonfinite="
                            f"{config.optim.skip_nonfinite}"
                            if config.optim.skip_nonfinite
                            else ""
                        )
                        + "); "
                        + (
                            f"the last good checkpoint is step {last_good} in {workdir}/checkpoints"
                            if last_good is not None
                            else "no checkpoint was saved before it"
                        )
                    )
            window += [{k: float(m[k]) for k in ("loss", "grad_norm", "lr")} for m in fetched]
        if window and logging_now:
            elapsed = time.perf_counter() - window_time
            images = (step - window_start) * config.batch_size
            img_per_sec = images / elapsed if images else float("nan")
            loss = float(np.mean(np.asarray([m["loss"] for m in window], np.float32)))
            grad_norm = float(np.mean(np.asarray([m["grad_norm"] for m in window], np.float32)))
            log.write(
                step,
                {
                    "train/loss": loss,
                    "train/lr": window[-1]["lr"],
                    "train/grad_norm": grad_norm,
                    "train/img_per_sec": img_per_sec,
                }
                | ({"train/skipped": skipped} if config.optim.skip_nonfinite else {}),
            )
            bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{img_per_sec:.1f}")
            window, window_start, window_time = [], step, time.perf_counter()

        scores = None
        if (config.eval_every and step % config.eval_every == 0) or last:
            scores = run_eval(state)
            log.write(step, metrics.flat_scores(scores, class_names))
            bar.write(
                f"step {step}: val mIoU {scores['miou']:.4f}  pixel acc {scores['pixel_acc']:.4f}"
            )
        if saving or stopping:
            flat = {checkpoint.BEST_METRIC: scores["miou"]} if scores else None
            log_state = {"steps": window, "in_a_row": in_a_row, "skipped": skipped}
            checkpoint.save(manager, step, state, train_iter, flat, log_state)
            last_good = step
        if scores or saving:  # images/s measures training only
            window_start, window_time = step, time.perf_counter()
        if stopping:
            bar.write(f"stopping at step {step}: checkpoint saved in {workdir}/checkpoints")
            break
    bar.close()

    # ---- End: wait for checkpoints, report ------------------------------------------------
    if step == config.total_steps and scores is None:  # resumed a finished run
        scores = run_eval(state)
    checkpoint.wait(manager)
    if scores is not None and is_main:
        print(f"validation at step {step}:\n{metrics.format_table(scores, class_names)}")
    return {"step": step, "state": state, "scores": scores}


def is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _flags(argv) -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string(
        "workdir", None, "run directory (default runs/<experiment>[_<arg>])", flag_values=fv
    )
    flags.DEFINE_bool(
        "allow_config_change",
        False,
        "resume a workdir whose saved config trains something else (recorded there)",
        flag_values=fv,
    )
    return fv


def main(argv=None) -> None:
    """The command line: argv without the program name (default sys.argv[1:])."""
    argv = sys.argv[1:] if argv is None else list(argv)
    fv = _flags(argv)
    rest = cli.parse_flags(fv, argv, prog="jaxseg.train", doc=__doc__)
    if rest:
        cli.fail("jaxseg.train", f"unexpected argument(s) {' '.join(rest)}")
    flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags
    sharding.initialize_distributed()
    try:  # options, paths, dataset names: the user's to fix, so one line, not a traceback
        train_and_evaluate(
            fv.config,
            fv.workdir or cli.default_workdir(cli.config_spec(argv)),
            allow_config_change=fv.allow_config_change,
        )
    except configs.ConfigError as e:
        cli.fail("jaxseg.train", str(e))
    except (checkpoint.DiskFullError, FloatingPointError) as e:  # the run's, not a bug: 1 line
        print(f"jaxseg.train: stopped: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
