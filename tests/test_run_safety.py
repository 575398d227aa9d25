"""Runs that never lose work and never ignore what they were told: cleanup on failure,
non-finite losses, one run per workdir, changed configs on resume, damaged checkpoints."""

import gc
import json
import os
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from jaxseg import cli, configs
from jaxseg import workdir as run_files
from jaxseg.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET = os.path.join(ROOT, "experiments", "unet.py") + ":quick"
TINY = [
    "--config.data.image_size=(16, 16)",
    "--config.eval.size=(16, 16)",
    "--config.data.num_val=8",
    "--config.batch_size=8",
    "--config.eval.batch_size=8",
    "--config.model.base_width=4",
    "--config.model.depth=2",
    "--config.log_every=1",
    "--config.eval_every=0",
    "--config.checkpoint_every=2",
    "--config.total_steps=2",
]
NAN_DATA = "--config.data.std=(0.0, 0.0, 0.0)"  # images / 0: a non-finite loss at once


def _threads_settle_at(count: int, seconds: float = 5.0) -> bool:
    """Whether the thread count comes back to `count` or below (a closed grain iterator's
    prefetch threads finish their current read first)."""
    import time

    deadline = time.time() + seconds
    while threading.active_count() > count and time.time() < deadline:
        time.sleep(0.01)
    return threading.active_count() <= count


def _config(*overrides):
    return cli.load_experiment(UNET, *TINY, *overrides)


def test_failed_run_releases_everything_and_saves_nothing(tmp_path):
    handler = signal.getsignal(signal.SIGTERM)
    threads = threading.active_count()
    arrays = len(jax.live_arrays())
    with pytest.raises(FloatingPointError) as failure:
        train_and_evaluate(_config(NAN_DATA, "--config.checkpoint_every=1"), str(tmp_path))
    message = str(failure.value)
    assert "non-finite loss or gradient at step 1" in message
    assert "no checkpoint was saved before it" in message
    del failure  # its traceback holds the run's frames
    gc.collect()
    assert signal.getsignal(signal.SIGTERM) is handler
    assert _threads_settle_at(threads), [t.name for t in threading.enumerate()]
    assert len(jax.live_arrays()) == arrays
    assert not os.path.exists(tmp_path / run_files.LOCK)
    steps = [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
    assert steps == []  # the non-finite state was not saved


def test_config_change_on_resume_is_refused_or_recorded(tmp_path):
    train_and_evaluate(_config(), str(tmp_path))
    more = ["--config.total_steps=4", "--config.optim.lr=0.01"]
    with pytest.raises(configs.ConfigError) as refused:
        train_and_evaluate(_config(*more), str(tmp_path))
    assert "total_steps: 2 -> 4" in str(refused.value) and "optim.lr: 0.006 -> 0.01" in str(
        refused.value
    )
    assert "--allow_config_change" in str(refused.value)
    # Evaluation-only fields change freely; a non-finite step names the last good checkpoint.
    with pytest.raises(FloatingPointError, match="step 3 .*last good checkpoint is step 2"):
        train_and_evaluate(
            _config(*more, NAN_DATA, "--config.eval.batch_size=16"),
            str(tmp_path),
            allow_config_change=True,
        )
    with open(tmp_path / run_files.CHANGES) as f:
        recorded = json.loads(f.readline())
    assert recorded["step"] == 2
    assert set(recorded["changes"]) == {"total_steps", "optim.lr", "data.std"}


def test_second_run_in_a_workdir_is_refused_and_a_dead_ones_lock_taken_over(tmp_path):
    held = run_files.RunLock(str(tmp_path))
    try:
        with pytest.raises(configs.ConfigError, match=f"pid {os.getpid()} on"):
            run_files.RunLock(str(tmp_path))
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        command = [sys.executable, "-m", "jaxseg.train", "--config", UNET, *TINY]
        done = subprocess.run(
            [*command, f"--workdir={tmp_path}"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=300,
        )
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"in use by the run of pid {os.getpid()}" in lines[0]
    finally:
        held.release()
    # A lock left by a process that is gone is stale: taken over.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with open(tmp_path / run_files.LOCK, "w") as f:
        json.dump({"host": held.holder["host"], "pid": gone.pid, "started": "then"}, f)
    again = run_files.RunLock(str(tmp_path))
    assert again.holder["pid"] == os.getpid()
    again.release()
    assert not os.path.exists(tmp_path / run_files.LOCK)


def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
    train_and_evaluate(_config("--config.total_steps=4"), str(tmp_path))
    state_dir = tmp_path / "checkpoints" / "4" / "state"
    victims = [p for p in state_dir.rglob("*") if p.is_file() and p.stat().st_size > 0]
    for path in victims:  # truncate every array file of the newest step
        if "d" in path.relative_to(state_dir).parts[:1] or path.name.startswith("ocdbt"):
            path.write_bytes(path.read_bytes()[:10])
    more = _config("--config.total_steps=6")
    result = train_and_evaluate(more, str(tmp_path), allow_config_change=True)
    out = capsys.readouterr().out
    assert "warning: checkpoint 4" in out and "resuming from step 2" in out
    assert "resumed at step 2" in out
    assert result["step"] == 6
    assert (tmp_path / "damaged_checkpoints" / "4").is_dir()
    assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())[-1] == 6


def test_common_mistakes_end_in_one_line_and_exit_2(tmp_path, capsys):
    """A user's mistake is not a crash: config, paths and data errors through the command
    line end in one line naming the key or file, exit 2, and leave no workdir behind."""
    from jaxseg import train

    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    folder = ["--config.data.name=folder", f"--config.data.root={tmp_path / 'data'}"]
    mistakes = [
        ([*folder], "data.class_names is empty"),
        (
            ["--config.data.name=folder", f"--config.data.root={tmp_path / 'nope'}"]
            + ["--config.data.class_names=('a', 'b')"],
            f"images directory not found: {tmp_path / 'nope'}",
        ),
        ([*folder, "--config.data.class_names=('a', 'b')"], "no image/mask pairs"),
        (["--config.loss.terms=(('dcie', 1.0),)"], "loss.terms names ['dcie']"),
        (["--config.model.name=unett"], "model.name='unett' is unknown; valid:"),
        (["--config.data.name=shape"], "unknown dataset 'shape'"),
        (["--config.optim.name=sgdd"], "unknown optimizer 'sgdd'"),
        (["--config.optim.schedule=linear"], "unknown schedule 'linear'"),
    ]
    for i, (args, says) in enumerate(mistakes):
        workdir = tmp_path / f"run{i}"
        with pytest.raises(SystemExit) as exit_info:
            train.main(["--config", UNET, *args, f"--workdir={workdir}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2, args
        assert len(err) == 1 and err[0].startswith("jaxseg.train: error:"), err
        assert says in err[0], (says, err[0])
        assert not workdir.exists(), args


def test_skip_budget_skips_non_finite_steps_then_stops(tmp_path, monkeypatch):
    """optim.skip_nonfinite=2: two non-finite steps are skipped (params and BatchNorm
    statistics untouched, both saved finite), the third stops the run before optax would
    apply it."""
    import optax

    from jaxseg import checkpoint, train
    from jaxseg.models import build_model
    from jaxseg.state import create_train_state

    config = _config(
        NAN_DATA,
        "--config.optim.skip_nonfinite=2",
        "--config.checkpoint_every=1",
        "--config.total_steps=5",
    )
    initial = {}
    real_initial_state = train.initial_state

    def record_initial(*args, **kwargs):  # the run's own state before its first step
        state, step = real_initial_state(*args, **kwargs)
        initial["weights"] = jax.device_get((state.params, state.batch_stats))
        return state, step

    monkeypatch.setattr(train, "initial_state", record_initial)
    with pytest.raises(FloatingPointError, match="step 3 .*after 2 skipped in a row"):
        train_and_evaluate(config, str(tmp_path))
    steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
    assert steps == [1, 2]
    model = build_model("unet", 5, base_width=4, depth=2)
    fresh = create_train_state(model, optax.identity(), jax.random.key(1), (16, 16, 3))
    before = jax.tree.leaves(initial["weights"])
    assert len(before) == len(jax.tree.leaves((fresh.params, fresh.batch_stats)))
    for step in steps:  # untouched: bit-equal to the state before the first step
        saved = checkpoint.load_weights(str(tmp_path / "checkpoints" / str(step)), fresh)
        after = jax.tree.leaves(jax.device_get((saved.params, saved.batch_stats)))
        for a, b in zip(before, after, strict=True):
            np.testing.assert_array_equal(b, a)
    with open(tmp_path / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["train/skipped"] for r in rows] == [1, 2]


def test_disk_full_during_a_save_stops_clearly_and_keeps_the_previous(tmp_path, monkeypatch):
    import errno

    from grain._src.python.checkpoint import handler

    from jaxseg import checkpoint

    real_save = handler.CheckpointHandler.save

    def full_at_step_4(self, directory, *args, **kwargs):
        if os.path.basename(str(directory).rstrip("/").rsplit("/", 1)[0]).startswith("4"):
            raise OSError(errno.ENOSPC, "No space left on device", str(directory))
        return real_save(self, directory, *args, **kwargs)

    monkeypatch.setattr(handler.CheckpointHandler, "save", full_at_step_4)
    handed = {}  # the weights the run handed to each save, before the disk filled up
    real_checkpoint_save = checkpoint.save

    def record(manager, step, state, *args, **kwargs):
        handed[step] = jax.device_get((state.params, state.batch_stats))
        return real_checkpoint_save(manager, step, state, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", record)
    with pytest.raises(checkpoint.DiskFullError, match="no space left.*run the same command"):
        train_and_evaluate(_config("--config.total_steps=6"), str(tmp_path))
    assert not os.path.exists(tmp_path / run_files.LOCK)
    # Step 2, saved before the disk filled up, is the newest and restores whole.
    import optax

    from jaxseg.models import build_model
    from jaxseg.state import create_train_state

    assert checkpoint.choose_step(str(tmp_path), "latest") == 2
    model = build_model("unet", 5, base_width=4, depth=2)
    fresh = create_train_state(model, optax.identity(), jax.random.key(0), (16, 16, 3))
    restored = checkpoint.load_weights(str(tmp_path), fresh)
    assert sorted(handed) == [2, 4]
    got = jax.tree.leaves(jax.device_get((restored.params, restored.batch_stats)))
    want = jax.tree.leaves(handed[2])
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    # ... and that is trained weights, not the initialisation load_weights was given.
    initialised = jax.tree.leaves((fresh.params, fresh.batch_stats))
    assert any(not np.array_equal(a, b) for a, b in zip(got, initialised, strict=True))


def test_twenty_runs_in_one_process_leave_no_arrays_threads_or_memory_behind(tmp_path):
    """Notebooks and sweeps run many trainings in one process: after twenty (a narrow
    model, to keep this quick), live device arrays and threads are back at the baseline and
    resident memory stays within 300 MB of the first run's peak."""
    import resource

    linear = os.path.join(ROOT, "experiments", "linear.py") + ":quick"
    options = [o for o in TINY if "model." not in o]
    gc.collect()  # what earlier tests left to the collector is not this test's baseline
    threads, arrays = threading.active_count(), len(jax.live_arrays())
    first_peak = None
    for i in range(20):
        config = cli.load_experiment(linear, *options, "--config.total_steps=1")
        train_and_evaluate(config, str(tmp_path / str(i)))
        gc.collect()
        # Nothing above the baseline (others' leftovers may still go away meanwhile).
        assert len(jax.live_arrays()) <= arrays and _threads_settle_at(threads), (
            i,
            [t.name for t in threading.enumerate()],
        )
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        first_peak = first_peak or peak_mb
    assert peak_mb < first_peak + 300, (first_peak, peak_mb)
