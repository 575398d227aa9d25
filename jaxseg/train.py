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
import signal
import sys
import threading

import jax
import numpy as np
from absl import flags

from jaxseg import checkpoint, cli, configs, evaluation, recipe, seeds, sharding, writer
from jaxseg import workdir as run_files
from jaxseg.meter import StepMeter
from jaxseg.models.pretrained import load_pretrained
from jaxseg.state import count_params

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
    # ---- Set-up: the parts, data, lock ----------------------------------------------------
    is_main = jax.process_index() == 0
    say = print if is_main else (lambda *a, **k: None)
    mesh = recipe.make_mesh(config)  # config.mesh.spatial devices share each crop
    replicas = seeds.build(config, mesh=mesh, workdir=workdir, progress=is_main)  # 1 per seed
    parts = replicas[0]
    config = parts.config  # loader.num_workers resolved, and saved so
    local_batch = sharding.check_batch_size(config.batch_size, mesh)
    train_iter = seeds.train_iterator(replicas, local_batch, workdir=workdir, progress=is_main)
    cleanup.callback(getattr(train_iter, "close", lambda: None))  # threads, worker processes
    if is_main:  # one run per workdir (nothing but the class weight cache is written before)
        cleanup.callback(run_files.RunLock(workdir).release)

    # ---- State: restored into the abstract state, else initialised ------------------------
    manager = checkpoint.make_manager(
        run_files.path(workdir, "checkpoints"), keep=config.keep_checkpoints
    )
    cleanup.callback(manager.close)  # waits for a save in flight
    resumable = manager.latest_step()
    if resumable is not None and run_files.has_config(workdir):
        changes = run_files.check_resume_config(workdir, config, resumable, allow_config_change)
        if changes:
            say(f"resuming with changed settings: {', '.join(changes)} (config_changes.jsonl)")
    init_rng, step_rng = seeds.rngs(config)  # a tuple of keys for seeds > 1
    state, start_step = initial_state(replicas, manager, train_iter, init_rng, say)
    if is_main:  # the workdir alone rebuilds the model and labels its output (jaxseg.workdir)
        run_files.write(workdir, config, parts.train_source)
    say(_headline(config, parts, mesh, workdir, start_step), flush=True)
    if parts.class_weights is not None and config.loss.class_weight_method:
        say(
            f"class weights ({config.loss.class_weight_method}): {np.round(parts.class_weights, 3)}"
        )

    # ---- Train, evaluate, save ---------------------------------------------------------
    train_fn, eval_fn = jit_steps(parts, mesh)
    if config.seeds_vmap:  # one vmapped program for every replica (not bit-equal)
        train_fn = seeds.vmapped(parts.train_step, mesh, config.seeds)
    elif config.seeds > 1:  # each replica's own step, bit-equal to its seed alone
        train_fn = seeds.each(train_fn)

    def run_eval(state):  # jaxseg.inference with config.eval (whole, slide, TTA)
        if config.seeds == 1:
            return evaluation.evaluate(eval_fn, _variables(state), config, parts.val_source, mesh)
        per_seed = [  # each replica's own val split (a seeded split or synthetic set differs)
            evaluation.evaluate(eval_fn, _variables(s), p.config, p.val_source, mesh)
            for s, p in zip(state, replicas, strict=True)
        ]
        return seeds.combined_scores(per_seed, seeds.seed_list(config))

    state, step, scores = _loop(
        state,
        start_step,
        parts=parts,
        train_fn=train_fn,
        run_eval=run_eval,
        train_iter=train_iter,
        manager=manager,
        rng=step_rng,
        mesh=mesh,
        workdir=workdir,
        stop_after=stop_after,
        cleanup=cleanup,
        is_main=is_main,
    )
    if step == config.total_steps and scores is None:  # resumed a finished run
        scores = run_eval(state)
    checkpoint.wait(manager)
    if scores is not None and is_main:
        print(f"validation at step {step}:\n{seeds.format_table(scores, parts.class_names)}")
    return {"step": step, "state": state, "scores": scores}


def initial_state(replicas, manager, train_iter, rng, say) -> tuple:
    """(state, start step): the newest checkpoint restored into the abstract state (the data
    iterator with it), else a jitted init straight into the replicated shardings, with
    model.pretrained's or init_from's weights loaded into it. replicas: recipe.Parts, one
    per seed; with several, the state is a tuple of one TrainState per seed (rng: a tuple)."""
    target = seeds.abstract_state(replicas)
    state, step = checkpoint.restore_latest(manager, target, train_iter, log=say)
    if state is not None:
        return state, step
    if len(replicas) == 1:
        return _fresh_state(replicas[0], rng, say), 0
    return tuple(_fresh_state(p, key, say) for p, key in zip(replicas, rng, strict=True)), 0


def _fresh_state(parts, rng, say):
    shardings = jax.tree.map(lambda s: s.sharding, parts.abstract_state)
    state = jax.jit(parts.init_state, out_shardings=shardings)(rng)
    config = parts.config
    if config.model.pretrained:
        variables = jax.device_get(_variables(state))
        variables = load_pretrained(
            parts.model,
            variables,
            config.model.pretrained,
            say,
            image_shape=(*config.data.image_size, config.data.channels),
        )
        targets = {"params": shardings.params, "batch_stats": shardings.batch_stats}
        variables = jax.device_put(variables, targets)
        state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
    if config.init_from:
        state = checkpoint.load_weights(config.init_from, state)
    return state


def _variables(state) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats}


def _headline(config, parts, mesh, workdir: str, start_step: int) -> str:
    """The run's first line: model, parameters, seeds, devices, data, workdir."""
    seeds_part = f"x {config.seeds} seeds " if config.seeds > 1 else ""
    if config.seeds_vmap and seeds.spreads(mesh, config.seeds):
        seeds_part += "(spread over the devices) "
    return (
        f"jaxseg: {config.model.name} with {count_params(parts.abstract_state.params):,} params "
        f"{seeds_part}on {mesh.devices.size} {jax.devices()[0].platform} device(s); "
        f"{len(parts.train_source)} train / {len(parts.val_source)} val examples; "
        f"workdir {workdir}" + (f"; resumed at step {start_step}" if start_step else "")
    )


def jit_steps(parts, mesh) -> tuple:
    """(train_fn, eval_fn): parts' steps jitted once, with explicit shardings (the batch
    split over the data axis, the rest replicated), the train state and eval totals donated."""
    replicated, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    train_fn = jax.jit(
        parts.train_step,
        in_shardings=(replicated, batch, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    return train_fn, evaluation.jit_eval_step(parts.eval_step, mesh)


def _loop(
    state,
    step,
    *,
    parts,
    train_fn,
    run_eval,
    train_iter,
    manager,
    rng,
    mesh,
    workdir,
    stop_after,
    cleanup,
    is_main,
) -> tuple:
    """Trains from `step` to total_steps (or a stop: SIGTERM or stop_after steps), with a
    checkpoint at the cadence, on the last step and on a stop; returns (state, step, the
    last step's val scores or None)."""
    config, start = parts.config, step
    stop_requested = _stop_on_sigterm(cleanup)
    log = writer.MetricWriter(workdir, resume_step=step, enabled=is_main)
    cleanup.callback(log.close)
    bar = writer.progress_bar(config.total_steps, step, enabled=is_main)
    cleanup.callback(bar.close)
    seed_list = seeds.seed_list(config)
    meter = StepMeter(
        config.batch_size * config.seeds,  # images/s over all replicas
        config.optim.skip_nonfinite,
        carried=checkpoint.restore_log(manager, step) if step else None,
        last_good=manager.latest_step(),
        checkpoints=f"{workdir}/checkpoints",
    )
    scores = None
    while step < config.total_steps:
        state, step_metrics = train_fn(state, seeds.to_global(next(train_iter), mesh), rng)
        meter.add(step_metrics)
        step += 1
        if meter.clock is None:  # leave compilation out of images/s (not out of the loss)
            jax.block_until_ready(state)
            meter.restart_clock(step)
        bar.update(1)
        last = step == config.total_steps
        stopping = _stop_decision(step, start, stop_after, stop_requested)
        saving = (config.checkpoint_every and step % config.checkpoint_every == 0) or last
        logging_now = step % config.log_every == 0 or last
        if logging_now or saving or stopping:
            meter.settle(step)  # after a non-finite streak it raises: that state is never saved
        line = meter.line(step) if logging_now else None
        if line:
            line = seeds.expand(line, seed_list)
            log.write(step, line)
            bar.set_postfix(
                loss=f"{line['train/loss']:.4f}", img_s=f"{line['train/img_per_sec']:.1f}"
            )
        scores = None
        if (config.eval_every and step % config.eval_every == 0) or last:
            scores = run_eval(state)
            log.write(step, seeds.flat_scores(scores, parts.class_names))
            bar.write(
                f"step {step}: val mIoU {scores['miou']:.4f}  pixel acc {scores['pixel_acc']:.4f}"
            )
        if saving or stopping:
            best = {checkpoint.BEST_METRIC: scores["miou"]} if scores else None
            checkpoint.save(manager, step, state, train_iter, best, meter.saved(step))
        if scores or saving:  # images/s measures training only
            meter.restart_clock(step)
        if stopping:
            bar.write(f"stopping at step {step}: checkpoint saved in {workdir}/checkpoints")
            break
    bar.close()
    return state, step, scores


def _stop_on_sigterm(cleanup) -> list:
    """A list that SIGTERM (preemption, scancel, launchers) appends to, in the main thread;
    the old handler comes back with cleanup."""
    requested = []
    if threading.current_thread() is threading.main_thread():
        cleanup.callback(signal.signal, signal.SIGTERM, signal.getsignal(signal.SIGTERM))
        signal.signal(signal.SIGTERM, lambda *_: requested.append(True))
    return requested


def _stop_decision(step: int, start: int, stop_after: int | None, requested: list) -> bool:
    """Whether every process stops (checkpoints, then returns) after `step`. A SIGTERM
    reaches one host first: all decide together at a fixed cadence, so all save the same
    step (one stopping alone would hang the others in their next collective); one process
    checks every step."""
    stopping = stop_after is not None and step - start >= stop_after
    if jax.process_count() == 1 or step % STOP_CHECK_EVERY == 0:
        stopping = sharding.any_process(bool(requested)) or stopping
    return stopping


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
    cli.parse_flags(fv, argv, prog="jaxseg.train", doc=__doc__)
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
    cli.run(main)
