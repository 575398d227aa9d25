"""Ahead-of-time compilation for TPU slices on a host without a TPU: the slice table, the
compile-only devices of a slice's topology, what XLA's analyses say of a program, and the
command that compiles a run's step for a slice.

    python -m jaxseg.aot --config experiments/deeplab.py --classes 21 --target tpu:v5e-8

It runs nothing: it lowers and compiles the step of jaxseg.benchmark (--mode train or infer,
the same --batch, --size, --dtype and --config.* overrides, the shardings of step mode over a
Mesh of the slice's devices) and reports compile success, XLA's memory per chip against the
chip's HBM and FLOPs per step, or XLA's out-of-memory line with exit status 1. The record is
appended to --results (default <workdir>/benchmark.jsonl) as one JSON line.

libtpu (the TPU runtime: `pip install -e '.[tpu]'`, jax[tpu] brings the libtpu matching
jax) compiles for a topology described by name; no TPU need be attached. The devices it
gives can build a Mesh and shardings but hold no memory and run nothing. This is the only
module that imports jax.experimental.topologies (experimental: its arguments have changed).
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time
from typing import NamedTuple

import jax
from absl import flags

from jaxseg import cli, configs, losses, recipe, sharding
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
from jaxseg.device_stats import flops_of
from jaxseg.state import create_train_state

PROG = "jaxseg.aot"

GIB = 2**30


class Slice(NamedTuple):
    topology: str  # libtpu's topology name: generation and chip grid
    chip_config: str  # "megacore": a chip's two TensorCores form one device (v4, v5p)
    hbm_bytes: int  # high-bandwidth memory per chip (one device), from Cloud TPU's tables


# Cloud TPU accelerator types. v4 and v5p names count TensorCores (two per chip; one
# megacore device per chip), v5e and v6e names count chips. Chip grids and chip configs as
# Cloud TPU's slice shapes; HBM: v4 32 GiB, v5e 16 GiB, v5p 95 GiB, v6e 32 GiB per chip.
SLICES = {
    "v4-8": Slice("v4:2x2x1", "megacore", 32 * GIB),
    "v4-32": Slice("v4:2x2x4", "megacore", 32 * GIB),
    "v5e-8": Slice("v5e:2x4", "default", 16 * GIB),
    "v5e-16": Slice("v5e:4x4", "default", 16 * GIB),
    "v5p-8": Slice("v5p:2x2x1", "megacore", 95 * GIB),
    "v5p-64": Slice("v5p:2x4x4", "megacore", 95 * GIB),
    "v6e-8": Slice("v6e:2x4", "default", 32 * GIB),
}


class AotError(ValueError):
    """The target cannot be compiled for here; the message is one line for the user."""


def parse_target(text: str) -> str:
    """'tpu:v5e-8' -> 'v5e-8' (a key of SLICES); AotError naming the valid ones otherwise."""
    platform, colon, name = text.partition(":")
    valid = ", ".join(f"tpu:{n}" for n in SLICES)
    if platform != "tpu" or not colon:
        raise AotError(f"--target {text!r}: only TPU slices compile ahead of time; valid: {valid}")
    if name not in SLICES:
        raise AotError(f"--target {text!r}: unknown TPU slice {name!r}; valid: {valid}")
    return name


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (XLA's run to dozens of lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def is_out_of_memory(error: BaseException) -> bool:
    """Whether a compile error is XLA running out of device memory (TPU: RESOURCE_EXHAUSTED,
    "Ran out of memory in memory space hbm")."""
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text


def topology_devices(name: str) -> list:
    """The compile-only devices of slice `name` (a key of SLICES), in libtpu's order.

    Raises AotError when libtpu is missing or refuses the topology."""
    spec = SLICES[name]
    # libtpu otherwise asks the GCE metadata server which TPU it runs on, and waits for it;
    # and takes /tmp/libtpu_lockfile, which would keep a second compile (or a compile beside
    # a training job on a TPU VM) out, though compiling touches no chip.
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    try:
        topology = topologies.get_topology_desc(
            platform="tpu",
            topology_name=spec.topology,
            chip_config_name=spec.chip_config,
            chips_per_host_bounds=(2, 2, 1),  # four chips per TPU VM host, as Cloud TPU's
            num_slices=1,
        )
    except Exception as e:  # RuntimeError without libtpu; JaxRuntimeError from libtpu
        hint = ""
        if libtpu_version() is None:
            hint = " (the TPU runtime is not installed: pip install -e '.[tpu]')"
        raise AotError(
            f"--target tpu:{name}: no TPU topology {spec.topology}{hint}: {first_line(e)}"
        ) from None
    return list(topology.devices)


def abstract(tree, sharding):
    """Every leaf of a pytree of arrays or ShapeDtypeStructs as a ShapeDtypeStruct with
    `sharding`: what jit's lower() takes for devices that cannot hold data."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def memory(compiled) -> dict:
    """Bytes per device of a compiled program, from XLA's memory analysis: arguments,
    outputs, aliased (outputs written into donated arguments, counted once), temporaries,
    generated code, and their total = arguments + outputs - aliased + temporaries + code."""
    m = compiled.memory_analysis()
    out = {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
        "code_bytes": int(m.generated_code_size_in_bytes),
    }
    out["total_bytes"] = (
        out["argument_bytes"]
        + out["output_bytes"]
        - out["alias_bytes"]
        + out["temp_bytes"]
        + out["code_bytes"]
    )
    return out


def rematerialized(compiled) -> int:
    """Instructions XLA recomputed to fit the device's memory (named `<op>.remat<k>` or
    `.remat_compressed` in the compiled HLO): a program at or near its HBM fits by
    recomputing, so its memory figure is what rematerialization left, not its footprint."""
    return len(re.findall(r"^\s*(?:ROOT )?%[\w.\-]+\.remat\w* = ", compiled.as_text(), re.M))


def libtpu_version() -> str | None:
    """The installed libtpu's version, None without one."""
    from importlib import metadata

    for dist in ("libtpu", "libtpu-nightly"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def format_table(r: dict) -> str:
    """aot_step's record as a two-column table (and the error line)."""
    h, w = r["size"]
    head = (
        f"jaxseg AOT: {r['model']} ({r['params']:,} params, {r['num_classes']} classes), "
        f"{r['mode']}, batch {r['batch']}, {h}x{w}, {r['dtype']}; {r['aot']} = {r['topology']}, "
        f"{r['device_count']} x {r['device_kind']} ({r['hosts']} hosts)"
        + (f"; mesh.spatial={r['spatial']}" if r.get("spatial", 1) > 1 else "")
    )
    gib = 2.0**-30
    rows = [
        ("status", r["status"]),
        ("lower s", cell(r["lower_s"], ".2f")),
        ("compile s", cell(r["compile_s"], ".2f")),
        ("HBM GiB/chip", cell(r["hbm_bytes_per_chip"], ".1f", gib)),
    ]
    if r["memory"]:
        m = r["memory"]
        rows += [
            ("memory GiB/chip", cell(m["total_bytes"], ".3f", gib)),
            ("share of HBM", cell(r["memory_share"], ".1%")),
            ("  arguments GiB", cell(m["argument_bytes"], ".3f", gib)),
            ("  outputs GiB", cell(m["output_bytes"], ".3f", gib)),
            ("  aliased GiB", cell(m["alias_bytes"], ".3f", gib)),
            ("  temporaries GiB", cell(m["temp_bytes"], ".3f", gib)),
            ("rematerialized ops", cell(r.get("rematerialized"), ".0f")),
            ("GFLOP/step", cell(r["flops_per_step"], ".1f", 1e-9)),
            ("GFLOP/step/chip", cell(r["flops_per_device"], ".1f", 1e-9)),
        ]
    lines = [head] + [f"  {name:<18} {value:>12}" for name, value in rows]
    if r["error"]:
        lines.append(f"  error: {r['error']}")
    return "\n".join(lines)


def _abstract_args(config, mesh, model, tx, *, mode: str, num_classes: int) -> tuple:
    """The step's arguments as ShapeDtypeStructs sharded over mesh: (state, batch[, rng]).
    Shapes only: nothing is allocated, on this host or on the slice."""
    replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    size = tuple(config.data.image_size)
    init = functools.partial(create_train_state, model, tx, image_shape=(*size, 3))
    state = abstract(jax.eval_shape(init, jax.random.key(config.seed)), replicated)
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
    if mode == "train":
        return state, batch, abstract(jax.eval_shape(jax.random.key, 0), replicated)
    return state, batch


def _compile(record: dict, lowered, spec: Slice, devices: int) -> dict:
    """Compiles lowered into record: status, error, compile_s, memory, FLOPs."""
    start = time.perf_counter()
    try:
        compiled = lowered.compile()
    except Exception as e:  # XLA's compile errors: JaxRuntimeError, by jax version
        record["status"] = "out_of_memory" if is_out_of_memory(e) else "error"
        record["error"] = first_line(e)
        return record
    finally:
        record["compile_s"] = time.perf_counter() - start
    record["memory"] = memory(compiled)
    record["memory_share"] = record["memory"]["total_bytes"] / spec.hbm_bytes
    record["rematerialized"] = rematerialized(compiled)
    device_flops = flops_of(compiled)  # the per-device (partitioned) program
    record["flops_per_device"] = device_flops
    record["flops_per_step"] = device_flops * devices if device_flops else None
    return record


def aot_step(config, *, target: str, mode: str, num_classes: int) -> dict:
    """Lowers and compiles the step of `mode` for a TPU slice with no TPU attached, with the
    shardings of step mode over a Mesh of the slice's devices; returns the record: status
    ("compiled", "out_of_memory" or "error" with XLA's first line), XLA's memory analysis
    per chip against the chip's HBM, and FLOPs per step. target: 'tpu:v5e-8' and the like."""
    name = parse_target(target)
    devices = topology_devices(name)
    if config.dtype == "auto":  # the accelerator's choice, not this (CPU) host's
        config.dtype = "bfloat16"
    mesh = sharding.make_mesh(devices, spatial=config.mesh.spatial)
    sharding.check_batch_size(config.batch_size, mesh)
    schedule, tx = recipe.optimizer(config)
    model = recipe.build_model(config, num_classes)
    args = _abstract_args(config, mesh, model, tx, mode=mode, num_classes=num_classes)
    fn, settings = step_function(
        config, model, tx, schedule, mesh, mode=mode, num_classes=num_classes
    )
    spec = SLICES[name]
    record = {
        **describe(
            config, model, args[0].params, num_classes=num_classes, mode=mode, settings=settings
        ),
        "aot": f"tpu:{name}",
        "topology": spec.topology,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "hosts": len({d.process_index for d in devices}),
        "spatial": config.mesh.spatial,  # chips sharing each image (its height split)
        "hbm_bytes_per_chip": spec.hbm_bytes,
        "libtpu_version": libtpu_version(),
        "status": "compiled",
        "error": None,
        "lower_s": None,
        "compile_s": None,
        "memory": None,
        "memory_share": None,
        "rematerialized": None,
        "flops_per_step": None,
        "flops_per_device": None,
    }
    start = time.perf_counter()
    lowered = fn.lower(*args)
    record["lower_s"] = time.perf_counter() - start
    return _compile(record, lowered, spec, len(devices))


def _flags(argv) -> flags.FlagValues:
    fv = flags.FlagValues()
    define_step_flags(fv)
    flags.DEFINE_string(
        "target",
        None,
        "the TPU slice to compile for (no TPU needed; libtpu is): "
        f"tpu:SLICE, SLICE one of {', '.join(SLICES)}",
        flag_values=fv,
    )
    flags.mark_flag_as_required("target", flag_values=fv)
    return fv


def main(argv=None) -> dict:
    """Runs the command line; returns the record. Exits with status 1 after writing it when
    the program does not compile (out of memory included), so scripts can ask whether a
    model fits a slice."""
    argv = sys.argv[1:] if argv is None else list(argv)
    fv = _flags(argv)
    cli.parse_flags(fv, argv, prog=PROG, doc=__doc__)
    config = fv.config
    try:
        parse_target(fv.target)
        apply_size_flags(config, fv)
    except (configs.ConfigError, ValueError) as e:
        cli.fail(PROG, str(e))
    if jax.config.jax_platforms != "cpu":
        # Compiling for a slice needs no local accelerator, and on a TPU VM this process
        # must not take the chips from a job that holds them.
        jax.config.update("jax_platforms", "cpu")
    sharding.initialize_distributed()
    num_classes = class_count(config, fv.classes, PROG)
    try:
        record = aot_step(config, target=fv.target, mode=fv.mode, num_classes=num_classes)
    except (AotError, ValueError) as e:
        cli.fail(PROG, str(e))
    print(format_table(record), flush=True)
    append_record(record, PROG, argv, results_path(fv, argv))
    if record["status"] != "compiled":
        sys.exit(1)
    return record


if __name__ == "__main__":
    cli.run(main)
