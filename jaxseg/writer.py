"""Run logs: metrics.jsonl (one JSON object per line), TensorBoard events, progress bar."""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import tqdm


class MetricWriter:
    """Writes {"step": s, "train/loss": ...} lines to <workdir>/metrics.jsonl and TensorBoard.

    Opened at `resume_step`, it first drops lines logged after that step by a run that
    was cut off, so the file always describes the run that the checkpoints continue.
    Only process 0 writes.
    """

    def __init__(self, workdir: str, *, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        if not enabled:
            return
        if os.path.exists(self.path):
            with open(self.path) as f:
                kept = [
                    line for line in f if line.strip() and json.loads(line)["step"] <= resume_step
                ]
            with open(self.path, "w") as f:
                f.writelines(kept)
        self._file = open(self.path, "a")  # noqa: SIM115 (closed in close())
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(workdir, purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        values = {k: _scalar(v) for k, v in values.items()}
        self._file.write(json.dumps({"step": int(step), **values}) + "\n")
        self._file.flush()  # a crash loses nothing already logged
        for name, value in values.items():
            if value is not None and math.isfinite(value):
                self._tb.add_scalar(name, value, step)
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tb.close()


def _scalar(value):
    value = float(np.asarray(value))
    return None if math.isnan(value) else value


class Bar(tqdm.tqdm):
    """tqdm without its monitor thread (it outlives the bar, so a finished or failed run
    would leave a thread behind in the process; our bars need no monitoring)."""

    monitor_interval = 0


def progress_bar(total: int, initial: int, enabled: bool = True) -> tqdm.tqdm:
    """Steps done / total with rate and ETA; loss and images/s go in the postfix."""
    return Bar(
        total=total,
        initial=initial,
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 10.0,
        disable=not enabled,
        file=sys.stderr,
    )
