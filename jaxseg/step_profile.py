"""Where a compiled step's time goes: its optimized HLO, a jax.profiler trace of a few steps,
and the most expensive device operations (kernels on a GPU, XLA ops on a TPU or a CPU)
with their share of the step. `python -m jaxseg.benchmark --profile DIR` writes and prints
them.

The trace is read from the Perfetto JSON that jax.profiler writes beside its XPlane file
(`create_perfetto_trace=True`): Chrome trace events, "X" (complete) events with a name, a
duration in microseconds, a process and a thread, and "M" events naming processes and
threads. Device operations are the events of processes named "/device:..." (a GPU's
streams, a TPU's ops); a CPU has no such process, and its XLA ops are the events of the
runtime's "tf_XLA..." threads, less the runtime's own bookkeeping.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os

import jax

# CPU runtime threads' events that are not XLA ops: waits, thread-pool bookkeeping, the
# executor's own spans ("Class::Method" names) and region ends.
_CPU_BOOKKEEPING = ("ThreadpoolListener", "SlinkyThreadPool", "end: ")


def trace_steps(run, state, directory: str, steps: int):
    """Runs `run(state) -> state` `steps` times under jax.profiler.trace(directory); returns
    the state and the Perfetto trace's path."""
    with jax.profiler.trace(directory, create_perfetto_trace=True):
        for _ in range(steps):
            state = run(state)
    return state, newest_trace(directory)


def newest_trace(directory: str) -> str:
    """The newest perfetto_trace.json.gz under directory (jax.profiler writes
    plugins/profile/<timestamp>/)."""
    found = glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"), recursive=True)
    if not found:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {directory}")
    return max(found, key=os.path.getmtime)


def read_events(path: str) -> list[dict]:
    with gzip.open(path, "rt") as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def op_seconds(events: list[dict]) -> dict[str, float]:
    """{operation name: total seconds} over the trace's device operations (module doc)."""
    processes, threads = {}, {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            processes[e["pid"]] = e.get("args", {}).get("name", "")
        elif e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[e["pid"], e.get("tid")] = e.get("args", {}).get("name", "")
    devices = {pid for pid, name in processes.items() if name.startswith("/device:")}

    def is_op(e) -> bool:
        if devices:
            return e["pid"] in devices
        thread = threads.get((e["pid"], e.get("tid")), "")
        name = e["name"]
        return (
            thread.startswith("tf_XLA")
            and "::" not in name
            and not name.startswith(_CPU_BOOKKEEPING)
        )

    totals = collections.defaultdict(float)
    for e in events:
        if e.get("ph") == "X" and is_op(e):
            totals[e["name"]] += e.get("dur", 0.0) * 1e-6
    return dict(totals)


def top_ops(
    seconds: dict[str, float], *, steps: int, step_s: float, devices: int = 1, k: int = 10
) -> list:
    """The k most expensive operations: [{"name", "ms_per_step", "share_of_step",
    "share_of_ops"}]. ms_per_step is summed over the devices; share_of_step = that / (the
    step's median wall time x devices), which overlapping streams, or CPU threads waiting
    for a core, can push past 1 in sum; share_of_ops = the op's part of all device ops'
    time."""
    total = sum(seconds.values())
    ranked = sorted(seconds.items(), key=lambda item: -item[1])[:k]
    return [
        {
            "name": name,
            "ms_per_step": 1e3 * s / steps,
            "share_of_step": s / steps / (step_s * devices),
            "share_of_ops": s / total,
        }
        for name, s in ranked
    ]


def format_top(top: list[dict]) -> str:
    lines = ["  most expensive device operations (ms/step, share of the step, of all ops):"]
    for op in top:
        shares = f"{op['share_of_step']:7.1%} {op['share_of_ops']:7.1%}"
        lines.append(f"    {op['ms_per_step']:9.3f} {shares}  {op['name'][:80]}")
    return "\n".join(lines)
