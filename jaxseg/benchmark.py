"""Step benchmark: throughput, compile time, FLOPs and MFU, memory, input stall.

    python -m jaxseg.benchmark --config experiments/unet.py --mode train --batch 4 \
        --size 256x256 --dtype f32 --steps 10 --warmup 3
    python -m jaxseg.benchmark --config experiments/unet.py:quick --pipeline

Builds the model, optimizer and state as jaxseg.train does (same library calls, same config
fields; --config.* overrides apply), jits the train step (or, with --mode infer,
jaxseg.inference with config.eval: whole, slide or TTA, then argmax) once with explicit
shardings and the state donated, and runs it on a device-resident random batch (u8 images,
i32 masks in [0, K)). --batch, --size and --dtype are shorthands for --config.batch_size,
--config.data.image_size and --config.dtype. Each of --steps timed steps ends in
block_until_ready; the table gives their median and 90th percentile. FLOPs come from XLA's
cost analysis of the compiled step (on GPUs, of the lowered step: the compiled one hides
its cuDNN convolutions). One JSON line per run is appended to --results (default
<workdir>/benchmark.jsonl, the workdir being runs/<config stem>[_<arg>] unless --workdir
says otherwise).

--pipeline then feeds the same compiled step from the real grain training pipeline
(config.loader.num_workers workers) through sharding.to_global, blocking on every step, so
the device is idle exactly while the host waits: input stall = (time in next(iterator) +
host-to-device transfer) / wall time.

--profile DIR also writes the compiled step's optimized HLO (DIR/step.hlo.txt) and a
jax.profiler trace of --profile_steps steps under DIR (TensorBoard's profile plugin or
Perfetto open it), and prints the ten most expensive device operations (GPU kernels, TPU or
CPU XLA ops) with their share of the step and of all ops (jaxseg.step_profile): one device
call tells where the time goes. Options to compare go on the same command line
(--config.model.atrous_impl=space_to_batch, --dtype, XLA_FLAGS in the environment).

The other tools: `python -m jaxseg.benchmark_input` times the input pipeline alone;
`python -m jaxseg.aot --target tpu:v5e-8` compiles the step for a TPU slice without one.
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import time

import jax
from absl import flags

from jaxseg import cli, configs, losses, recipe, sharding, step_profile
from jaxseg.benchmark_steps import (
    append_record,
    apply_size_flags,
    cell,
    class_count,
    define_step_flags,
    describe,
    device_canvas,
    random_batch,
    results_path,
    step_function,
)
from jaxseg.device_stats import flops_of, peak_memory_bytes, peak_tflops
from jaxseg.state import create_train_state

PROG = "jaxseg.benchmark"
# Flags of the tools that left this entry: the command that now does that job.
MOVED = {
    "data_only": "python -m jaxseg.benchmark_input",
    "data-only": "python -m jaxseg.benchmark_input",
    "aot": "python -m jaxseg.aot --target tpu:SLICE",
}


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of a non-empty list."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _setup(config, mesh, *, mode: str, num_classes: int) -> tuple:
    """(model, tx, schedule, state, batch) as jaxseg.train builds them, the batch random
    and device-resident."""
    schedule, tx = recipe.optimizer(config)
    model = recipe.build_model(config, num_classes)
    # Initial values do not change step times; rbg draws from the same initializers and
    # compiles several times faster than threefry on CPU (8 s against 29 s for a tiny U-Net).
    init_rng = jax.random.key(config.seed, impl="rbg")
    size = tuple(config.data.image_size)
    init = jax.jit(
        functools.partial(create_train_state, model, tx, image_shape=(*size, 3)),
        out_shardings=sharding.replicated(mesh),
    )
    local = random_batch(
        config.seed + jax.process_index(),
        batch=sharding.check_batch_size(config.batch_size, mesh),
        size=size,
        num_classes=num_classes,
        distance=losses.needs_distance(config.loss.terms),
        canvas=device_canvas(config, mode, with_data=True),
    )
    batch = jax.block_until_ready(sharding.to_global(local, mesh))
    return model, tx, schedule, init(init_rng), batch


def _flops(compiled, lowered, devices: int) -> tuple[float | None, str]:
    """(FLOPs of one step over all devices, "compiled" or "lowered": which program counted)."""
    device_flops = flops_of(compiled)  # XLA analyses the per-device (partitioned) program
    flops = device_flops * devices if device_flops else None
    if jax.default_backend() == "gpu":
        # XLA:GPU turns convolutions into cuDNN custom calls, which the compiled program's
        # cost analysis does not count (an H200 run gave 288 GFLOP for U-Net's 18.5 TFLOP
        # step). The lowered program, before any such rewrite, still has them: the whole
        # step's FLOPs over all devices (docs/benchmarks.md, "GPU").
        whole_step = flops_of(lowered)
        if whole_step:
            return whole_step, "lowered"
    return flops, "compiled"


def _figures(config, times: list[float], compiled, lowered, devices: int) -> dict:
    """The record's timing figures: median and p90 ms, images/s, FLOPs, TFLOP/s, MFU."""
    median_s = statistics.median(times)
    flops, flops_source = _flops(compiled, lowered, devices)
    tflops = flops / median_s / 1e12 if flops else None
    peak = peak_tflops(jax.devices()[0].device_kind, configs.compute_dtype(config.dtype))
    return {
        "median_ms": 1e3 * median_s,
        "p90_ms": 1e3 * _quantile(times, 0.9),
        "images_per_s": config.batch_size / median_s,
        "flops_per_step": flops,
        "flops_source": flops_source,  # "compiled" or, on GPUs, "lowered" (see _flops)
        "tflops_per_s": tflops,
        "peak_tflops_per_device": peak,
        "mfu": tflops / (peak * devices) if tflops and peak else None,
        "peak_memory_bytes": peak_memory_bytes(jax.local_devices()),
        "step_ms": [1e3 * t for t in times],
    }


def _pipeline(config, mesh, run, state, *, steps: int, warmup: int) -> dict:
    """The compiled step fed by the real training pipeline: ms/step, images/s, input stall."""
    workers = recipe.worker_count(config)  # loader.num_workers, -1 (auto) resolved
    source = recipe.make_source(config, "train")
    local_batch = sharding.check_batch_size(config.batch_size, mesh)
    iterator = recipe.train_iterator(config, source, local_batch, num_workers=workers)
    waits, walls = [], []
    for i in range(warmup + steps):
        start = time.perf_counter()
        batch = jax.block_until_ready(sharding.to_global(next(iterator), mesh))
        fetched = time.perf_counter()
        state = run(state, batch)
        if i >= warmup:
            waits.append(fetched - start)
            walls.append(time.perf_counter() - start)
    return {
        "num_workers": workers,
        "median_ms": 1e3 * statistics.median(walls),
        "images_per_s": config.batch_size * len(walls) / sum(walls),
        "input_stall": sum(waits) / sum(walls),
    }


def _profile(compiled, step, state, directory: str, steps: int, step_s: float, devices: int):
    """--profile: the optimized HLO (step.hlo.txt) and a trace of `steps` calls of
    step(state) -> state under directory, and the ten most expensive device operations
    (jaxseg.step_profile); returns (the state carried on, the record's "profile")."""
    os.makedirs(directory, exist_ok=True)
    hlo = os.path.join(directory, "step.hlo.txt")
    with open(hlo, "w") as f:
        f.write(compiled.as_text())
    state, trace = step_profile.trace_steps(step, state, directory, steps)
    seconds = step_profile.op_seconds(step_profile.read_events(trace))
    top = step_profile.top_ops(seconds, steps=steps, step_s=step_s, devices=devices)
    return state, {"dir": directory, "hlo": hlo, "trace": trace, "steps": steps, "top": top}


def benchmark_step(
    config,
    *,
    mode: str,
    steps: int,
    warmup: int,
    num_classes: int,
    pipeline: bool,
    profile: str = "",
    profile_steps: int = 3,
) -> dict:
    """Compiles and times one train (or infer) step; returns the record of the run.
    profile: a directory for the step's HLO, trace and most expensive operations."""
    mesh = sharding.make_mesh()
    model, tx, schedule, state, batch = _setup(config, mesh, mode=mode, num_classes=num_classes)
    # The step: jitted once, explicit shardings, state donated.
    fn, settings = step_function(
        config, model, tx, schedule, mesh, mode=mode, num_classes=num_classes
    )
    _, step_rng = jax.random.split(jax.random.key(config.seed))
    step_args = (step_rng,) if mode == "train" else ()
    start = time.perf_counter()
    lowered = fn.lower(state, batch, *step_args)
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start

    def run(state, batch):
        """One step, waited for; returns the state to carry (train donates it)."""
        out = compiled(state, batch, *step_args)
        jax.block_until_ready(out)
        return out[0] if mode == "train" else state

    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        state = run(state, batch)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    profiled = None
    if profile:  # before the pipeline, which takes the (donated) state on
        step_s = statistics.median(times)
        step = functools.partial(run, batch=batch)
        state, profiled = _profile(
            compiled, step, state, profile, profile_steps, step_s, mesh.devices.size
        )
    described = describe(
        config, model, state.params, num_classes=num_classes, mode=mode, settings=settings
    )
    return {
        **described,
        "steps": steps,
        "warmup": warmup,
        "lower_s": lower_s,
        "compile_s": compile_s,
        **_figures(config, times, compiled, lowered, mesh.devices.size),
        "host_load_1m": os.getloadavg()[0],  # other processes on the host skew CPU timings
        "device_kind": jax.devices()[0].device_kind,
        "platform": jax.devices()[0].platform,
        "device_count": mesh.devices.size,
        "pipeline": (
            _pipeline(config, mesh, run, state, steps=steps, warmup=warmup) if pipeline else None
        ),
        "profile": profiled,
    }


def format_table(r: dict) -> str:
    """The record of benchmark_step as a two-column table."""
    h, w = r["size"]
    head = (
        f"jaxseg benchmark: {r['model']} ({r['params']:,} params, {r['num_classes']} classes), "
        f"{r['mode']}, batch {r['batch']}, {h}x{w}, {r['dtype']}; "
        f"{r['device_count']} x {r['device_kind']}"
    )
    rows = [
        ("lower s", cell(r["lower_s"], ".2f")),
        ("compile s", cell(r["compile_s"], ".2f")),
        ("median ms/step", cell(r["median_ms"], ".2f")),
        ("p90 ms/step", cell(r["p90_ms"], ".2f")),
        ("images/s", cell(r["images_per_s"], ".2f")),
        ("GFLOP/step", cell(r["flops_per_step"], ".3f", 1e-9)),
        ("TFLOP/s", cell(r["tflops_per_s"], ".4f")),
        ("MFU", cell(r["mfu"], ".2%")),
        ("peak memory MiB", cell(r["peak_memory_bytes"], ".1f", 2.0**-20)),
    ]
    if r["pipeline"]:
        p = r["pipeline"]
        rows += [
            ("pipeline workers", str(p["num_workers"])),
            ("pipeline ms/step", cell(p["median_ms"], ".2f")),
            ("pipeline images/s", cell(p["images_per_s"], ".2f")),
            ("input stall", cell(p["input_stall"], ".3f")),
        ]
    lines = [head] + [f"  {name:<18} {value:>12}" for name, value in rows]
    if r.get("profile"):
        lines += [f"  profile: {r['profile']['dir']}", step_profile.format_top(r["profile"]["top"])]
    return "\n".join(lines)


def _flags(argv) -> flags.FlagValues:
    fv = flags.FlagValues()
    define = dict(flag_values=fv)
    define_step_flags(fv)
    flags.DEFINE_integer("steps", 20, "timed steps", lower_bound=1, **define)
    flags.DEFINE_integer("warmup", 3, "untimed steps first", lower_bound=0, **define)
    flags.DEFINE_bool(
        "pipeline", False, "also feed the step from the real input pipeline", **define
    )
    flags.DEFINE_string(
        "profile",
        "",
        "a directory: the step's optimized HLO, a jax.profiler trace, and the ten most "
        "expensive device operations with their share of the step",
        **define,
    )
    flags.DEFINE_integer("profile_steps", 3, "steps traced by --profile", lower_bound=1, **define)
    return fv


def _moved(argv: list[str]) -> None:
    """A flag of a tool that has its own command now: one line naming it, exit 2."""
    for arg in argv:
        name = arg.lstrip("-").partition("=")[0]
        if arg.startswith("--") and name in MOVED:
            cli.fail(PROG, f"--{name} is a command of its own now: {MOVED[name]} --config ...")


def main(argv=None) -> dict:
    """Runs the command line; returns the step record."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _moved(argv)
    fv = _flags(argv)
    cli.parse_flags(fv, argv, prog=PROG, doc=__doc__)
    config = fv.config
    try:
        apply_size_flags(config, fv)
    except (configs.ConfigError, ValueError) as e:
        cli.fail(PROG, str(e))
    sharding.initialize_distributed()
    flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags
    record = benchmark_step(
        config,
        mode=fv.mode,
        steps=fv.steps,
        warmup=fv.warmup,
        num_classes=class_count(config, fv.classes, PROG),
        pipeline=fv.pipeline,
        profile=fv.profile,
        profile_steps=fv.profile_steps,
    )
    print(format_table(record), flush=True)
    append_record(record, PROG, argv, results_path(fv, argv))
    return record


if __name__ == "__main__":
    cli.run(main)
