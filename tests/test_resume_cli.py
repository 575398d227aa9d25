"""The command-line promise: SIGKILL after a checkpoint, run the same command, same result."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

from jaxseg import checkpoint
from jaxseg.models import build_model
from jaxseg.state import create_train_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = [
    sys.executable,
    "-m",
    "jaxseg.train",
    "--config",
    "experiments/unet.py:quick",
    "--config.data.image_size=(32, 32)",
    "--config.eval.size=(32, 32)",
    "--config.data.num_val=8",
    "--config.batch_size=8",
    "--config.eval.batch_size=8",
    "--config.model.base_width=4",
    "--config.total_steps=30",
    "--config.log_every=5",
    "--config.eval_every=0",
    "--config.checkpoint_every=5",
]


# One device in the subprocesses: the in-process resume test covers 8; this one is about
# process death, and is quicker without fake-device overhead.
ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def _final_params(workdir):
    model = build_model("unet", 5, base_width=4, depth=4)
    template = create_train_state(model, optax.identity(), jax.random.key(0), (32, 32, 3))
    return jax.device_get(checkpoint.load_weights(str(workdir), template).params)


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# Slow (80 s on 2 cores): tests/test_crash_trials.py (also slow) kills 20 times; the default
# suite keeps in-process resume (test_train.py), the stale-lock takeover and the two-process
# SIGTERM test (test_run_safety.py, test_multiprocess.py).
@pytest.mark.slow
def test_sigkill_then_same_command_matches_uninterrupted(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(
        [*COMMAND, f"--workdir={straight}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
        env=ENV,
    )

    proc = subprocess.Popen(
        [*COMMAND, f"--workdir={killed}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "5").is_dir() and proc.poll() is None:
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    done = [int(d) for d in os.listdir(killed / "checkpoints") if d.isdigit()]
    assert done and max(done) < 30

    out = subprocess.run(
        [*COMMAND, f"--workdir={killed}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert "resumed at step" in out.stdout
    jax.tree.map(np.testing.assert_array_equal, _final_params(straight), _final_params(killed))
    # Everything logged but the wall-clock rate is identical, losses and val metrics alike.
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train/img_per_sec"} for r in rows]
    assert strip(_rows(killed)) == strip(_rows(straight))
    assert any("val/miou" in r for r in _rows(killed))
