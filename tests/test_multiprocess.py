"""Two processes x 4 fake CPU devices, jax.distributed on localhost with gloo collectives."""

import json
import os
import subprocess
import sys

import portpicker

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiprocess_worker.py")
ROOT = os.path.dirname(os.path.dirname(WORKER))


def test_two_processes_shard_data_and_build_one_global_batch(tmp_path):
    port = str(portpicker.pick_unused_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    # Output to files, not pipes: a full pipe would block one process inside a collective.
    logs = [open(tmp_path / f"{i}.log", "w") for i in range(2)]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, str(i), port, str(tmp_path / f"{i}.json")],
            cwd=ROOT,
            env=env,
            stdout=logs[i],
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    try:
        for i, p in enumerate(procs):
            p.wait(timeout=240)
            assert p.returncode == 0, (tmp_path / f"{i}.log").read_text()[-3000:]
    finally:
        for p, log in zip(procs, logs, strict=True):
            p.kill()
            log.close()
    r0, r1 = (json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2))
    assert r0["process_count"] == 2 and r0["device_count"] == 8
    assert r0["per_process_batch"] == r1["per_process_batch"] == 8
    # Training: disjoint shards that together are the whole dataset, each seen once an epoch.
    assert not set(r0["train_ids"]) & set(r1["train_ids"])
    assert sorted(r0["train_ids"] + r1["train_ids"]) == list(range(40))
    # One global batch of 8 (4 per process), the same array seen from both processes.
    assert r0["global_shape"] == r1["global_shape"] == [8, 4, 4, 3]
    # Image i is i in channel 0 (16 pixels, channel 1 is 0 below 256): the global batch's
    # sum is 16 x the ids of both processes' first local batches, counted here by hand.
    first = r0["train_ids"][:4] + r1["train_ids"][:4]
    assert r0["global_sum"] == r1["global_sum"] == 16 * sum(first)
    # Evaluation: every example exactly once, the same number of batches on both processes.
    assert r0["eval_batches"] == r1["eval_batches"]
    assert sorted(r0["eval_ids"] + r1["eval_ids"]) == list(range(13))
    # Class weights counted in two shares equal those of one process over all examples.
    sys.path.insert(0, os.path.dirname(WORKER))
    from multiprocess_worker import StripeSource

    from jaxseg.class_weights import class_frequencies, compute_weights

    whole = compute_weights(*class_frequencies(StripeSource(23), 3, progress=False), "median")
    assert r0["class_weights"] == r1["class_weights"] == whole.tolist()
    cached = json.loads((tmp_path / "weights_run" / "class_weights.json").read_text())
    assert cached["weights"] == whole.tolist()


TRAIN_WORKER = os.path.join(os.path.dirname(WORKER), "multiprocess_train_worker.py")


def _start_pair(tmp_path, workdir, tag):
    port = str(portpicker.pick_unused_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    logs = [open(tmp_path / f"{tag}{i}.log", "w") for i in range(2)]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [sys.executable, TRAIN_WORKER, str(i), port, str(workdir)],
            cwd=ROOT,
            env=env,
            stdout=logs[i],
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    return procs, logs


def _wait_pair(tmp_path, procs, logs, tag):
    try:
        for i, p in enumerate(procs):
            p.wait(timeout=300)
            assert p.returncode == 0, (tmp_path / f"{tag}{i}.log").read_text()[-3000:]
    finally:
        for p, log in zip(procs, logs, strict=True):
            p.kill()
            log.close()


def test_sigterm_to_one_process_stops_both_at_one_step_and_both_resume(tmp_path):
    import signal
    import time

    workdir = tmp_path / "run"
    procs, logs = _start_pair(tmp_path, workdir, "first")
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert time.time() < deadline and all(p.poll() is None for p in procs), (
            tmp_path / "first0.log"
        ).read_text()[-3000:]
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)  # one host hears it first
    _wait_pair(tmp_path, procs, logs, "first")
    steps = [int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()]
    assert len(steps) == 1 and 3 <= steps[0] < 30, steps
    assert steps[0] % 5 == 0  # the collective decision's cadence

    procs, logs = _start_pair(tmp_path, workdir, "again")
    _wait_pair(tmp_path, procs, logs, "again")
    assert f"resumed at step {steps[0]}" in (tmp_path / "again0.log").read_text()
    for i in range(2):
        assert "ended at step 30" in (tmp_path / f"again{i}.log").read_text()
