"""Run logs: metrics.jsonl (one JSON object per line), TensorBoard events, progress bar."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import tqdm

from jaxseg import workdir as run_files


class MetricWriter:
    """Writes {"step": s, "train/loss": ...} lines to <workdir>/metrics.jsonl and TensorBoard.

    Opened at `resume_step`, it first drops lines logged after that step by a run that
    was cut off, so the file always describes the run that the checkpoints continue.
    Only process 0 writes. The workdir may be an object-store URL (gs://): the file is
    rewritten whole at each write (object stores cannot append; the file stays small, a
    line per log step), written then renamed, so a crash never leaves half a line.
    """

    def __init__(
        self,
        workdir: str,
        *,
        resume_step: int = 0,
        enabled: bool = True,
        tensorboard: bool = True,
    ):
        self.enabled = enabled
        self.path = run_files.path(workdir, "metrics.jsonl")
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lines = []
        if self.path.exists():
            self._lines = [
                line + "\n"
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step
            ]
            run_files.write_text_atomic(self.path, "".join(self._lines))
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(
                str(run_files.path(workdir)), purge_step=resume_step + 1 if resume_step else None
            )

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        values = {k: _scalar(v) for k, v in values.items()}
        self._lines.append(json.dumps({"step": int(step), **values}) + "\n")
        run_files.write_text_atomic(self.path, "".join(self._lines))  # a crash loses nothing
        if self._tb is not None:
            for name, value in values.items():
                if value is not None and math.isfinite(value):
                    self._tb.add_scalar(name, value, step)
            self._tb.flush()

    def close(self) -> None:
        if self.enabled and self._tb is not None:
            self._tb.close()
            self._tb = None


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
