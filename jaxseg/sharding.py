"""Device mesh, shardings, and assembly of per-process batches into global arrays.

One mesh axis, "data": the batch is split over every device of every process and the
train state is replicated. Models know nothing of this.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed() -> None:
    """jax.distributed.initialize() when launched on several hosts (launch.sh sets
    JAXSEG_MULTIHOST=1; the coordinator comes from the SLURM or TPU environment). Every entry
    point calls this first: before any other jax call, and before grain shards by process."""
    if os.environ.get("JAXSEG_MULTIHOST") == "1" and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices (jax.sharding.Mesh: automatic axis types)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis; other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "batch_size") -> int:
    """Returns the per-process batch; the global batch must split evenly over devices."""
    devices = mesh.devices.size
    if global_batch % devices:
        raise ValueError(
            f"{what}={global_batch} does not split over {devices} devices; "
            f"use a multiple of {devices}"
        )
    return global_batch // jax.process_count()


def to_global(batch: dict, mesh: Mesh) -> dict:
    """Per-process numpy batch {name: [b,...]} -> global jax.Arrays [b * processes, ...]."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }


def any_process(flag: bool) -> bool:
    """Whether flag is set on any process: the same answer everywhere (a collective, so
    every process must call it at the same point). One process: the flag itself."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def sum_over_processes(counts: np.ndarray) -> np.ndarray:
    """int64 counts summed over every process (exactly: sent as two 31-bit halves, since
    jax arrays are 32-bit by default). One process: the counts themselves."""
    counts = np.asarray(counts, np.int64)
    if jax.process_count() == 1:
        return counts
    from jax.experimental import multihost_utils

    halves = np.stack([counts >> 31, counts & (2**31 - 1)]).astype(np.int32)
    gathered = np.asarray(multihost_utils.process_allgather(halves), np.int64)
    return (gathered[:, 0] << 31).sum(0) + gathered[:, 1].sum(0)
