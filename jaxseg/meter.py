"""The train loop's bookkeeping between log lines: the steps' metrics, the throughput clock,
the non-finite streak and skip count, and the last step saved with a finite state."""

from __future__ import annotations

import time

import jax
import numpy as np


class StepMeter:
    """Collects each step's device metrics {"loss", "grad_norm", "lr", "finite"} (scalars,
    or f32[N] with N seeds: jaxseg.seeds) and turns them into log lines (a list per seed).

    Metrics stay on the device until `settle` fetches them (at the log cadence and before a
    save: no per-step sync). The unlogged window travels with each checkpoint (`saved`)
    and comes back as `carried`, so the first line after a resume averages the same steps
    as an uninterrupted run's.

    skip_nonfinite: how many non-finite steps in a row the optimizer skips
    (optim.skip_nonfinite); one more raises FloatingPointError. last_good: the newest
    checkpoint step (of a finite state), named in that error; checkpoints: its folder.
    """

    def __init__(
        self,
        batch_size: int,
        skip_nonfinite: int,
        *,
        carried: dict | None = None,
        last_good: int | None = None,
        checkpoints: str = "checkpoints",
    ):
        carried = carried or {"steps": [], "in_a_row": 0, "skipped": 0}
        self.batch_size, self.skip_nonfinite = batch_size, skip_nonfinite
        self.window = list(carried["steps"])  # settled steps: {"loss", "grad_norm", "lr"}
        self.in_a_row, self.skipped = carried["in_a_row"], carried["skipped"]
        self.last_good, self.checkpoints = last_good, checkpoints
        self.pending = []  # device metrics not yet fetched
        self.clock = None  # (step, time) the images/s window started at; None before a step

    def add(self, step_metrics: dict) -> None:
        self.pending.append(step_metrics)

    def restart_clock(self, step: int) -> None:
        """Images/s counts from here (after compilation, an evaluation or a save)."""
        self.clock = (step, time.perf_counter())

    def settle(self, step: int) -> None:
        """Fetches the pending steps (the last one is `step`) into the window; raises
        FloatingPointError when more than skip_nonfinite of them in a row are not finite."""
        if not self.pending:
            return
        fetched, self.pending = jax.device_get(self.pending), []
        for offset, m in enumerate(fetched):
            finite = bool(np.all(m["finite"]))  # every seed's (jaxseg.seeds)
            self.in_a_row = 0 if finite else self.in_a_row + 1
            self.skipped += not finite
            if self.in_a_row > self.skip_nonfinite:  # optax would apply the next one
                raise FloatingPointError(self._nonfinite(step - len(fetched) + offset + 1, m))
        # A float, or a list of one per seed (seeds > 1): JSON-able for the checkpoint.
        self.window += [
            {k: np.asarray(m[k], np.float64).tolist() for k in ("loss", "grad_norm", "lr")}
            for m in fetched
        ]

    def _nonfinite(self, bad: int, m: dict) -> str:
        skipped = (
            f", after {self.in_a_row - 1} skipped in a row: optim.skip_nonfinite="
            f"{self.skip_nonfinite}"
            if self.skip_nonfinite
            else ""
        )
        where = (
            f"the last good checkpoint is step {self.last_good} in {self.checkpoints}"
            if self.last_good is not None
            else "no checkpoint was saved before it"
        )
        loss = np.asarray(m["loss"]).tolist()  # a list with several seeds
        return f"non-finite loss or gradient at step {bad} (loss {loss}{skipped}); {where}"

    def line(self, step: int) -> dict | None:
        """The log line of the settled window ending at `step` (None when empty): mean loss
        and gradient norm, the last lr, images/s since the clock; the window starts again."""
        if not self.window:
            return None
        start, started = self.clock
        images = (step - start) * self.batch_size
        per_second = images / (time.perf_counter() - started) if images else float("nan")

        def mean(key):  # a float, or a list of one per seed
            values = np.asarray([m[key] for m in self.window], np.float32)
            if values.ndim == 1:
                return float(np.mean(values))
            # Each seed's column alone: numpy sums a 1-D array pairwise but the rows of a 2-D
            # one in sequence, and a replica logs exactly what its seed's run alone does.
            return [float(np.mean(np.ascontiguousarray(column))) for column in values.T]

        line = {
            "train/loss": mean("loss"),
            "train/lr": np.asarray(self.window[-1]["lr"]).tolist(),
            "train/grad_norm": mean("grad_norm"),
            "train/img_per_sec": per_second,
        }
        if self.skip_nonfinite:
            line["train/skipped"] = self.skipped
        self.window = []
        self.restart_clock(step)
        return line

    def saved(self, step: int) -> dict:
        """Records `step` as the last good checkpoint; returns the state to save with it."""
        self.last_good = step
        return {"steps": self.window, "in_a_row": self.in_a_row, "skipped": self.skipped}
