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
    assert r0["global_sum"] == r1["global_sum"] > 0
    # Evaluation: every example exactly once, the same number of batches on both processes.
    assert r0["eval_batches"] == r1["eval_batches"]
    assert sorted(r0["eval_ids"] + r1["eval_ids"]) == list(range(13))
