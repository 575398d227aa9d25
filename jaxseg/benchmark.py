"""Benchmarks: step throughput, compile time, FLOPs and MFU, memory; the input pipeline.

    python -m jaxseg.benchmark --config experiments/unet.py --mode train --batch 4 \
        --size 256x256 --dtype f32 --steps 10 --warmup 3
    python -m jaxseg.benchmark --config experiments/unet.py:quick --pipeline
    python -m jaxseg.benchmark --data_only --config experiments/unet_membrane.py \
        --config.data.image_size="(512, 512)" --workers=0,1,2 --batches=20

Step mode builds the model, optimizer and state as jaxseg.train does (same library calls,
same config fields; --config.* overrides apply), jits the train step (or, with --mode infer,
jaxseg.inference with config.eval: whole, slide or TTA, then argmax) once with explicit
shardings and the state donated, and runs it
on a device-resident random batch (u8 images, i32 masks in [0, K)). --batch, --size and
--dtype are shorthands for --config.batch_size, --config.data.image_size and --config.dtype.
Each of --steps timed steps ends in block_until_ready; the table gives their median and
90th percentile. FLOPs come from XLA's cost analysis of the compiled step (on GPUs, of the
lowered step: the compiled one hides its cuDNN convolutions).
One JSON line per run is appended to --results (default <workdir>/benchmark.jsonl, the
workdir being runs/<config stem>[_<arg>] unless --workdir says otherwise).

--pipeline then feeds the same compiled step from the real grain training pipeline
(config.loader.num_workers workers) through sharding.to_global, blocking on every step, so
the device is idle exactly while the host waits: input stall = (time in next(iterator) +
host-to-device transfer) / wall time.

--data_only times the input pipeline alone: images/s per grain worker count, after one
warm-up batch, the median of --repeats timings of --batches batches (a JSON line only
with --results).

--aot tpu:v5e-8 (or another slice of jaxseg.aot.SLICES) runs nothing: it lowers and
compiles the same step for a TPU slice on this host, no TPU attached (needs libtpu, the
`tpu` extra), and reports compile success, XLA's memory per chip against the chip's HBM and
FLOPs per step, or XLA's out-of-memory line with exit status 1.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import shlex
import statistics
import sys
import time

import flax
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from absl import flags

from jaxseg import aot, cli, config_checks, configs, inference, losses, recipe, sharding
from jaxseg.data import throughput
from jaxseg.device_stats import flops_of, peak_memory_bytes, peak_tflops
from jaxseg.state import count_params, create_train_state


def infer_step(state, batch: dict, *, model, mean, std, settings, window_sharding=None):
    """jaxseg.inference as evaluate and predict run it (config.eval: whole, slide, TTA):
    u8[B,H,W,C] -> predicted classes i32[B,H,W]."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    scores = inference.scores(
        variables,
        batch["image"],
        model=model,
        mean=mean,
        std=std,
        settings=settings,
        window_sharding=window_sharding,
    )
    return inference.labels(scores)


def step_function(config, model, tx, schedule, mesh, *, mode: str, num_classes: int):
    """(the step of `mode` jitted over mesh, inference settings or None for train).

    train: (state, batch, rng) -> (state, metrics), state donated, as jaxseg.train jits it;
    infer: (state, batch) -> predicted classes i32[B,H,W] split over the data axis. The
    batch is split over the data axis, everything else replicated."""
    replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    if mode == "train":
        class_weights = None
        if config.loss.class_weights:
            class_weights = jnp.asarray(config.loss.class_weights)
        elif config.loss.class_weight_method:  # computed from data in train.py; same cost
            class_weights = jnp.ones((num_classes,), jnp.float32)
        fn = jax.jit(
            recipe.train_step(config, model, tx, schedule, class_weights),
            in_shardings=(replicated, batch_sharding, replicated),
            out_shardings=(replicated, replicated),
            donate_argnums=0,
        )
        return fn, None
    settings = recipe.inference_settings(config, mesh.devices.size)
    fn = jax.jit(
        functools.partial(
            infer_step,
            model=model,
            mean=config.data.mean,
            std=config.data.std,
            settings=settings,
            window_sharding=batch_sharding if settings.mode == "slide" else None,
        ),
        in_shardings=(replicated, batch_sharding),
        out_shardings=batch_sharding,
    )
    return fn, settings


def model_options(config, model) -> dict:
    """config.model's fields as the built model has them (its own defaults filled in)."""
    return {k: getattr(model, k) for k in config.model if k in type(model).__dataclass_fields__}


def describe(config, model, params, *, num_classes: int, mode: str, settings) -> dict:
    """The fields of a benchmark record that say what ran: model, sizes, dtype, loss,
    optimizer or inference settings (step_function's), versions."""
    loss_terms = [[str(name), float(w)] for name, w in config.loss.terms]
    return {
        "framework": "jaxseg",
        "model": config.model.name,
        "model_options": model_options(config, model),
        "params": count_params(params),
        "num_classes": num_classes,
        "mode": mode,
        "batch": config.batch_size,
        "size": list(config.data.image_size),
        "dtype": configs.compute_dtype(config.dtype),
        "optimizer": config.optim.name if mode == "train" else None,
        "loss_terms": loss_terms if mode == "train" else None,
        "inference": None if settings is None else settings.describe(),
        "aux_weights": {str(n): float(w) for n, w in config.loss.aux_weights},
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "flax_version": flax.__version__,
    }


def random_batch(
    seed: int,
    *,
    batch: int,
    size: tuple[int, int],
    num_classes: int,
    distance: bool,
    canvas: tuple[int, int] | None = None,
) -> dict:
    """This process's share of a random batch, as numpy: {"image": u8[b,H,W,3],
    "mask": i32[b,H,W] in [0, K)} (+ "distance": f32[b,H,W,K] for the boundary loss).
    With a canvas (augment.backend=device), what the train step then augments:
    {"image": u8[b,Hc,Wc,3], "mask": u8[b,Hc,Wc], "size": i32[b,2]} filling the canvas."""
    rng = np.random.default_rng(seed)
    if canvas is not None:
        return {
            "image": rng.integers(0, 256, (batch, *canvas, 3), np.uint8),
            "mask": rng.integers(0, num_classes, (batch, *canvas), np.uint8),
            "size": np.tile(np.asarray(canvas, np.int32), (batch, 1)),
        }
    out = {
        "image": rng.integers(0, 256, (batch, *size, 3), np.uint8),
        "mask": rng.integers(0, num_classes, (batch, *size), np.int32),
    }
    if distance:
        out["distance"] = rng.standard_normal((batch, *size, num_classes), np.float32)
    return out


def device_canvas(config, mode: str, *, with_data: bool) -> tuple[int, int] | None:
    """The canvas a train step of augment.backend=device takes: recipe.canvas_size (the
    training pipeline's), or without data (AOT) augment.canvas_size, else the crop size;
    None for other steps."""
    if mode != "train" or config.augment.backend != "device":
        return None
    if with_data:
        return recipe.canvas_size(config, recipe.make_source(config, "train"))
    return tuple(config.augment.canvas_size) or tuple(config.data.image_size)


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of a non-empty list."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def benchmark_step(
    config, *, mode: str, steps: int, warmup: int, num_classes: int, pipeline: bool
) -> dict:
    """Compiles and times one train (or infer) step; returns the record of the run."""
    # ---- Model, optimizer, state: as jaxseg.train builds them ---------------------------
    mesh = sharding.make_mesh()
    replicated = sharding.replicated(mesh)
    local_batch = sharding.check_batch_size(config.batch_size, mesh)
    data = config.data
    dtype = configs.compute_dtype(config.dtype)
    schedule, tx = recipe.optimizer(config)
    model = recipe.build_model(config, num_classes)
    _, step_rng = jax.random.split(jax.random.key(config.seed))
    # Initial values do not change step times; rbg draws from the same initializers and
    # compiles several times faster than threefry on CPU (8 s against 29 s for a tiny U-Net).
    init_rng = jax.random.key(config.seed, impl="rbg")
    size = tuple(data.image_size)
    init = jax.jit(
        functools.partial(create_train_state, model, tx, image_shape=(*size, 3)),
        out_shardings=replicated,
    )
    state = init(init_rng)
    loss_terms = tuple((str(name), float(w)) for name, w in config.loss.terms)
    distance = any(name == "boundary" for name, _ in loss_terms)
    local = random_batch(
        config.seed + jax.process_index(),
        batch=local_batch,
        size=size,
        num_classes=num_classes,
        distance=distance,
        canvas=device_canvas(config, mode, with_data=True),
    )
    batch = jax.block_until_ready(sharding.to_global(local, mesh))  # device-resident

    # ---- The step: jitted once, explicit shardings, state donated ----------------------
    fn, settings = step_function(
        config, model, tx, schedule, mesh, mode=mode, num_classes=num_classes
    )
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

    # ---- Derived figures -------------------------------------------------------------
    devices = mesh.devices.size
    device_kind = jax.devices()[0].device_kind
    median_s = statistics.median(times)
    device_flops = flops_of(compiled)  # XLA analyses the per-device (partitioned) program
    flops = device_flops * devices if device_flops else None
    flops_source = "compiled"
    if jax.default_backend() == "gpu":
        # XLA:GPU turns convolutions into cuDNN custom calls, which the compiled program's
        # cost analysis does not count (an H200 run gave 288 GFLOP for U-Net's 18.5 TFLOP
        # step). The lowered program, before any such rewrite, still has them: the whole
        # step's FLOPs over all devices (docs/benchmarks.md, "GPU").
        whole_step = flops_of(lowered)
        if whole_step:
            flops, flops_source = whole_step, "lowered"
    tflops = flops / median_s / 1e12 if flops else None
    peak = peak_tflops(device_kind, dtype)
    record = {
        **describe(
            config, model, state.params, num_classes=num_classes, mode=mode, settings=settings
        ),
        "steps": steps,
        "warmup": warmup,
        "lower_s": lower_s,
        "compile_s": compile_s,
        "median_ms": 1e3 * median_s,
        "p90_ms": 1e3 * _quantile(times, 0.9),
        "images_per_s": config.batch_size / median_s,
        "flops_per_step": flops,
        "flops_source": flops_source,  # "compiled" or, on GPUs, "lowered" (see above)
        "tflops_per_s": tflops,
        "peak_tflops_per_device": peak,
        "mfu": tflops / (peak * devices) if tflops and peak else None,
        "peak_memory_bytes": peak_memory_bytes(jax.local_devices()),
        "step_ms": [1e3 * t for t in times],
        "host_load_1m": os.getloadavg()[0],  # other processes on the host skew CPU timings
        "device_kind": device_kind,
        "platform": jax.devices()[0].platform,
        "device_count": devices,
        "pipeline": None,
    }

    # ---- Optional: the same step fed by the real input pipeline -------------------------
    if pipeline:
        workers = recipe.worker_count(config)  # loader.num_workers, -1 (auto) resolved
        source = recipe.make_source(config, "train")
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
        record["pipeline"] = {
            "num_workers": workers,
            "median_ms": 1e3 * statistics.median(walls),
            "images_per_s": config.batch_size * len(walls) / sum(walls),
            "input_stall": sum(waits) / sum(walls),
        }
    return record


def aot_step(config, *, target: str, mode: str, num_classes: int) -> dict:
    """Lowers and compiles the step of `mode` for a TPU slice with no TPU attached, with the
    shardings of step mode over a Mesh of the slice's devices; returns the record: status
    ("compiled", "out_of_memory" or "error" with XLA's first line), XLA's memory analysis
    per chip against the chip's HBM, and FLOPs per step. target: 'tpu:v5e-8' and the like."""
    name = aot.parse_target(target)
    devices = aot.topology_devices(name)
    if config.dtype == "auto":  # the accelerator's choice, not this (CPU) host's
        config.dtype = "bfloat16"
    mesh = sharding.make_mesh(devices)
    sharding.check_batch_size(config.batch_size, mesh)
    replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    schedule, tx = recipe.optimizer(config)
    model = recipe.build_model(config, num_classes)
    size = tuple(config.data.image_size)
    # Shapes only: nothing is allocated, on this host or on the slice.
    init = functools.partial(create_train_state, model, tx, image_shape=(*size, 3))
    state = aot.abstract(jax.eval_shape(init, jax.random.key(config.seed)), replicated)
    example = random_batch(
        0,
        batch=1,
        size=size,
        num_classes=num_classes,
        distance=losses.needs_distance(config.loss.terms),
        canvas=device_canvas(config, mode, with_data=False),
    )
    batch = {
        k: jax.ShapeDtypeStruct((config.batch_size, *v.shape[1:]), v.dtype, sharding=batch_sharding)
        for k, v in example.items()
    }
    fn, settings = step_function(
        config, model, tx, schedule, mesh, mode=mode, num_classes=num_classes
    )
    args = (state, batch)
    if mode == "train":
        args += (aot.abstract(jax.eval_shape(jax.random.key, 0), replicated),)
    spec = aot.SLICES[name]
    record = {
        **describe(
            config, model, state.params, num_classes=num_classes, mode=mode, settings=settings
        ),
        "aot": f"tpu:{name}",
        "topology": spec.topology,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "hosts": len({d.process_index for d in devices}),
        "hbm_bytes_per_chip": spec.hbm_bytes,
        "libtpu_version": aot.libtpu_version(),
        "status": "compiled",
        "error": None,
        "lower_s": None,
        "compile_s": None,
        "memory": None,
        "memory_share": None,
        "flops_per_step": None,
        "flops_per_device": None,
    }
    start = time.perf_counter()
    lowered = fn.lower(*args)
    record["lower_s"] = time.perf_counter() - start
    start = time.perf_counter()
    try:
        compiled = lowered.compile()
    except Exception as e:  # XLA's compile errors: JaxRuntimeError, by jax version
        record["status"] = "out_of_memory" if aot.is_out_of_memory(e) else "error"
        record["error"] = aot.first_line(e)
        return record
    finally:
        record["compile_s"] = time.perf_counter() - start
    record["memory"] = aot.memory(compiled)
    record["memory_share"] = record["memory"]["total_bytes"] / spec.hbm_bytes
    device_flops = flops_of(compiled)  # the per-device (partitioned) program
    record["flops_per_device"] = device_flops
    record["flops_per_step"] = device_flops * len(devices) if device_flops else None
    return record


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, spec)


def format_table(r: dict) -> str:
    """The record of benchmark_step as a two-column table."""
    h, w = r["size"]
    head = (
        f"jaxseg benchmark: {r['model']} ({r['params']:,} params, {r['num_classes']} classes), "
        f"{r['mode']}, batch {r['batch']}, {h}x{w}, {r['dtype']}; "
        f"{r['device_count']} x {r['device_kind']}"
    )
    rows = [
        ("lower s", _fmt(r["lower_s"], ".2f")),
        ("compile s", _fmt(r["compile_s"], ".2f")),
        ("median ms/step", _fmt(r["median_ms"], ".2f")),
        ("p90 ms/step", _fmt(r["p90_ms"], ".2f")),
        ("images/s", _fmt(r["images_per_s"], ".2f")),
        ("GFLOP/step", _fmt(r["flops_per_step"], ".3f", 1e-9)),
        ("TFLOP/s", _fmt(r["tflops_per_s"], ".4f")),
        ("MFU", _fmt(r["mfu"], ".2%")),
        ("peak memory MiB", _fmt(r["peak_memory_bytes"], ".1f", 2.0**-20)),
    ]
    if r["pipeline"]:
        p = r["pipeline"]
        rows += [
            ("pipeline workers", str(p["num_workers"])),
            ("pipeline ms/step", _fmt(p["median_ms"], ".2f")),
            ("pipeline images/s", _fmt(p["images_per_s"], ".2f")),
            ("input stall", _fmt(p["input_stall"], ".3f")),
        ]
    return "\n".join([head] + [f"  {name:<18} {value:>12}" for name, value in rows])


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    try:
        return int(h), int(w or h)
    except ValueError:
        raise flags.ValidationError(f"--size needs HxW like 512x512, got {text!r}") from None


def _flags(argv) -> flags.FlagValues:
    fv = flags.FlagValues()
    define = dict(flag_values=fv)
    flags.DEFINE_string("workdir", None, "default home of --results: runs/<experiment>", **define)
    flags.DEFINE_enum(
        "mode", "train", ["train", "infer"], "time the train step or inference", **define
    )
    flags.DEFINE_integer("batch", None, "global batch (config.batch_size)", **define)
    flags.DEFINE_string("size", None, "HxW (config.data.image_size)", **define)
    flags.DEFINE_enum(
        "dtype", None, ["bf16", "bfloat16", "f32", "float32"], "config.dtype", **define
    )
    flags.DEFINE_integer("steps", 20, "timed steps", lower_bound=1, **define)
    flags.DEFINE_integer("warmup", 3, "untimed steps first", lower_bound=0, **define)
    flags.DEFINE_integer("classes", None, "number of classes (default: the dataset's)", **define)
    flags.DEFINE_string(
        "results", None, "JSON-lines file (default <workdir>/benchmark.jsonl)", **define
    )
    flags.DEFINE_bool(
        "pipeline", False, "also feed the step from the real input pipeline", **define
    )
    flags.DEFINE_bool("data_only", False, "time the input pipeline alone", **define)
    flags.DEFINE_list("workers", ["0", "1", "2"], "--data_only: grain worker counts", **define)
    flags.DEFINE_integer("batches", 20, "--data_only: batches timed", lower_bound=1, **define)
    flags.DEFINE_integer("repeats", 1, "--data_only: timings (median)", lower_bound=1, **define)
    flags.DEFINE_string(
        "aot",
        None,
        "compile the step ahead of time for a TPU slice (no TPU needed; libtpu is): "
        f"tpu:SLICE, SLICE one of {', '.join(aot.SLICES)}",
        **define,
    )
    flags.DEFINE_alias("data-only", "data_only", flag_values=fv)  # the earlier spelling
    flags.register_validator("size", lambda v: v is None or bool(_size(v)), flag_values=fv)
    return fv


def _append(record: dict, argv: list[str], results: str) -> None:
    """Dates the record, names its command and appends it to results as one JSON line."""
    record["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    record["command"] = shlex.join(["python", "-m", "jaxseg.benchmark", *argv])
    os.makedirs(os.path.dirname(results) or ".", exist_ok=True)
    with open(results, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"appended to {results}")


def main(argv=None) -> dict | None:
    """Runs the command line; returns the step (or --aot) record, or --data_only's.

    --aot exits with status 1 after writing its record when the program does not compile
    (out of memory included), so scripts can ask whether a model fits a slice."""
    argv = sys.argv[1:] if argv is None else list(argv)
    fv = _flags(argv)
    rest = cli.parse_flags(fv, argv, prog="jaxseg.benchmark", doc=__doc__)
    try:
        if rest:
            raise configs.ConfigError(f"unexpected argument(s) {' '.join(rest)}")
        workers = [int(w) for w in fv.workers]
        if fv.aot:
            aot.parse_target(fv.aot)
            clash = [f for f in ("pipeline", "data_only") if fv[f].value]
            if clash:
                raise configs.ConfigError(f"--{clash[0]} runs steps; --aot only compiles")
        config = fv.config
        # Locked ConfigDicts accept new values for existing fields.
        if fv.batch is not None:
            config.batch_size = fv.batch
        if fv.size is not None:
            config.data.image_size = _size(fv.size)
        if fv.dtype is not None:
            config.dtype = "bfloat16" if fv.dtype.startswith("bf") else "float32"
        config_checks.check_options(config)
    except (configs.ConfigError, ValueError) as e:
        cli.fail("jaxseg.benchmark", str(e))
    if fv.aot and jax.config.jax_platforms != "cpu":
        # Compiling for a slice needs no local accelerator, and on a TPU VM this process
        # must not take the chips from a job that holds them.
        jax.config.update("jax_platforms", "cpu")
    sharding.initialize_distributed()
    flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags

    if fv.data_only:
        height, width = config.data.image_size
        source = recipe.make_source(config, "train")
        costs = throughput.stage_costs(
            source,
            recipe.augment_options(config.data),
            num_classes=len(source.class_names),
            ignore_index=config.data.ignore_index,
            repeats=fv.repeats,
        )
        print(throughput.format_costs(costs, f"one core, {config.data.name}, {height}x{width}:"))
        print(
            f"input pipeline: {config.data.name}, crops {height}x{width}, batch {config.batch_size}"
        )
        print(f"{'workers':>8}  {'images/s':>10}")
        rates = {}
        for num_workers in workers:
            runs = [
                throughput.pipeline_images_per_s(
                    recipe.train_iterator(
                        config, source, config.batch_size, num_workers=num_workers
                    ),
                    batches=fv.batches,
                    batch_size=config.batch_size,
                )
                for _ in range(fv.repeats)
            ]
            rates[num_workers] = statistics.median(runs)
            print(f"{num_workers:>8}  {rates[num_workers]:>10.1f}", flush=True)
        record = {
            "framework": "jaxseg",
            "data_only": True,
            "dataset": config.data.name,
            "size": [height, width],
            "batch": config.batch_size,
            "batches": fv.batches,
            "repeats": fv.repeats,
            "images_per_s": {str(w): r for w, r in rates.items()},
            "ms_per_image_one_core": dict(costs),
            "host_cpus": os.cpu_count(),
            "host_load_1m": os.getloadavg()[0],
        }
        if fv.results:  # only when asked: the table above is the usual answer
            _append(record, argv, fv.results)
        return record

    num_classes = fv.classes
    if num_classes is None:
        try:
            num_classes = len(recipe.make_source(config, "train").class_names)
        except (OSError, ValueError) as e:
            cli.fail("jaxseg.benchmark", f"{e} (or give --classes K)")
    results = fv.results or os.path.join(
        fv.workdir or cli.default_workdir(cli.config_spec(argv)), "benchmark.jsonl"
    )
    if fv.aot:
        try:
            record = aot_step(config, target=fv.aot, mode=fv.mode, num_classes=num_classes)
        except (aot.AotError, ValueError) as e:
            cli.fail("jaxseg.benchmark", str(e))
        print(aot.format_table(record), flush=True)
        _append(record, argv, results)
        if record["status"] != "compiled":
            sys.exit(1)
        return record
    record = benchmark_step(
        config,
        mode=fv.mode,
        steps=fv.steps,
        warmup=fv.warmup,
        num_classes=num_classes,
        pipeline=fv.pipeline,
    )
    print(format_table(record), flush=True)
    _append(record, argv, results)
    return record


if __name__ == "__main__":
    main()
