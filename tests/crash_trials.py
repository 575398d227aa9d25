"""Crash consistency: kill a training run with SIGKILL at random moments (during steps and
during asynchronous checkpoint saves), restart it each time, and check that it ends
bit-identical to a run never interrupted.

    python tests/crash_trials.py --trials 20 --out runs/crash_trials

Prints one line per kill (the step reached, whether a save was in flight) and the verdict;
exits 1 when the final parameters or the logged metrics differ. tests/test_crash_trials.py
runs it (marked slow).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

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
    "--config.total_steps=3000",
    "--config.log_every=10",
    "--config.eval_every=0",
    "--config.checkpoint_every=7",
    "--config.keep_checkpoints=2",
]
ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}


def _final_params(workdir: str):
    import jax
    import optax

    from jaxseg import checkpoint
    from jaxseg.models import build_model
    from jaxseg.state import create_train_state

    model = build_model("unet", 5, base_width=4, depth=4)
    template = create_train_state(model, optax.identity(), jax.random.key(0), (32, 32, 3))
    return jax.device_get(checkpoint.load_weights(workdir, template).params)


def _rows(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if k != "train/img_per_sec"} for r in rows]


def _unfinished(workdir: str) -> set[tuple[str, int, int]]:
    """Orbax's unfinished saves: the temporary directories of checkpoints/ (a save writes
    one, "126.orbax-checkpoint-tmp", and renames it to the step's number when it has
    finished), as (name, inode, ctime): a later run's save of the same step that reuses the
    name of one left behind is still told apart."""
    directory = os.path.join(workdir, "checkpoints")
    found = set()
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
        try:
            stat = os.stat(os.path.join(directory, name))
        except FileNotFoundError:  # renamed meanwhile: that save has finished
            continue
        if "tmp" in name:
            found.add((name, stat.st_ino, stat.st_ctime_ns))
    return found


def _newest(workdir: str) -> int | None:
    directory = os.path.join(workdir, "checkpoints")
    steps = (
        [int(d) for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(directory) else []
    )
    return max(steps, default=None)


def run_trials(trials: int, out: str, seed: int = 0, log=print) -> dict:
    """The straight run, then `trials` kills and restarts of another; returns the verdict."""
    rng = random.Random(seed)
    straight, killed = os.path.join(out, "straight"), os.path.join(out, "killed")
    os.makedirs(out, exist_ok=True)
    subprocess.run(
        [*COMMAND, f"--workdir={straight}"],
        cwd=ROOT,
        env=ENV,
        check=True,
        capture_output=True,
        timeout=1200,
    )
    kills = []
    while len(kills) < trials:
        before = _unfinished(killed)  # left by earlier kills: not this run's saves
        log_path = os.path.join(out, f"kill{len(kills) + 1}.log")
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [*COMMAND, f"--workdir={killed}"],
                cwd=ROOT,
                env=ENV,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        # Once the run has made progress (a checkpoint newer than the one it resumed from),
        # kill it: every other time within 3 s (during steps, sometimes during a save), in
        # between as soon as the next asynchronous save has begun (its directory appears).
        start, deadline = _newest(killed), time.time() + 300
        while proc.poll() is None and time.time() < deadline and _newest(killed) == start:
            time.sleep(0.01)
        if len(kills) % 2:
            deadline = time.time() + 60
            while proc.poll() is None and time.time() < deadline and _unfinished(killed) <= before:
                time.sleep(0.002)
        else:
            time.sleep(rng.uniform(0.0, 3.0))
        if proc.poll() is not None:
            raise RuntimeError(f"the run ended before kill {len(kills) + 1}: raise total_steps")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # During a save: a save of this run had begun and not finished when the kill landed.
        during = bool(_unfinished(killed) - before)
        kills.append({"newest_checkpoint": _newest(killed), "during_save": during})
        log(
            f"kill {len(kills)}: newest checkpoint {kills[-1]['newest_checkpoint']}, "
            f"save in flight: {kills[-1]['during_save']}"
        )
    subprocess.run(
        [*COMMAND, f"--workdir={killed}"],
        cwd=ROOT,
        env=ENV,
        check=True,
        capture_output=True,
        timeout=1200,
    )
    import jax
    import numpy as np

    same_params = all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(_final_params(straight)),
            jax.tree.leaves(_final_params(killed)),
            strict=True,
        )
    )
    same_metrics = _rows(straight) == _rows(killed)
    return {
        "trials": trials,
        "during_save": sum(k["during_save"] for k in kills),
        "same_params": same_params,
        "same_metrics": same_metrics,
        "kills": kills,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--out", default=os.path.join("runs", "crash_trials"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    verdict = run_trials(args.trials, args.out, args.seed)
    ok = verdict["same_params"] and verdict["same_metrics"]
    print(
        f"{args.trials} kills ({verdict['during_save']} during a save): final params "
        f"{'bit-identical' if verdict['same_params'] else 'DIFFERENT'}, metrics.jsonl "
        f"{'identical' if verdict['same_metrics'] else 'DIFFERENT'} to the uninterrupted run"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
