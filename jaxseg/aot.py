"""Ahead-of-time compilation for TPU slices on a host without a TPU: the slice table, the
compile-only devices of a slice's topology, and what XLA's analyses say of a program.

    python -m jaxseg.benchmark --config experiments/deeplab.py --aot tpu:v5e-8

libtpu (the TPU runtime: `pip install -e '.[tpu]'`, jax[tpu] brings the libtpu matching
jax) compiles for a topology described by name; no TPU need be attached. The devices it
gives can build a Mesh and shardings but hold no memory and run nothing. This is the only
module that imports jax.experimental.topologies (experimental: its arguments have changed).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax

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
        raise AotError(f"--aot {text!r}: only TPU slices compile ahead of time; valid: {valid}")
    if name not in SLICES:
        raise AotError(f"--aot {text!r}: unknown TPU slice {name!r}; valid: {valid}")
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
            f"--aot tpu:{name}: no TPU topology {spec.topology}{hint}: {first_line(e)}"
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


def libtpu_version() -> str | None:
    """The installed libtpu's version, None without one."""
    from importlib import metadata

    for dist in ("libtpu", "libtpu-nightly"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, spec)


def format_table(r: dict) -> str:
    """jaxseg.benchmark's --aot record as a two-column table (and the error line)."""
    h, w = r["size"]
    head = (
        f"jaxseg AOT: {r['model']} ({r['params']:,} params, {r['num_classes']} classes), "
        f"{r['mode']}, batch {r['batch']}, {h}x{w}, {r['dtype']}; {r['aot']} = {r['topology']}, "
        f"{r['device_count']} x {r['device_kind']} ({r['hosts']} hosts)"
    )
    gib = 2.0**-30
    rows = [
        ("status", r["status"]),
        ("lower s", _fmt(r["lower_s"], ".2f")),
        ("compile s", _fmt(r["compile_s"], ".2f")),
        ("HBM GiB/chip", _fmt(r["hbm_bytes_per_chip"], ".1f", gib)),
    ]
    if r["memory"]:
        m = r["memory"]
        rows += [
            ("memory GiB/chip", _fmt(m["total_bytes"], ".3f", gib)),
            ("share of HBM", _fmt(r["memory_share"], ".1%")),
            ("  arguments GiB", _fmt(m["argument_bytes"], ".3f", gib)),
            ("  outputs GiB", _fmt(m["output_bytes"], ".3f", gib)),
            ("  aliased GiB", _fmt(m["alias_bytes"], ".3f", gib)),
            ("  temporaries GiB", _fmt(m["temp_bytes"], ".3f", gib)),
            ("GFLOP/step", _fmt(r["flops_per_step"], ".1f", 1e-9)),
            ("GFLOP/step/chip", _fmt(r["flops_per_device"], ".1f", 1e-9)),
        ]
    lines = [head] + [f"  {name:<18} {value:>12}" for name, value in rows]
    if r["error"]:
        lines.append(f"  error: {r['error']}")
    return "\n".join(lines)
