"""Device mesh, shardings, and assembly of per-process batches into global arrays.

One mesh axis, "data": the batch is split over every device of every process and the
train state is replicated. With mesh.spatial = K > 1 the mesh is (devices / K, K) over
("data", "spatial"): the batch is split over "data" and, inside the train step, the height of
the images and masks over "spatial"; XLA's SPMD partitioner then splits every activation's
height and exchanges the halos itself. Models know nothing of this.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
SPATIAL_AXIS = "spatial"


def initialize_distributed() -> None:
    """jax.distributed.initialize() when launched on several hosts (launch.sh sets
    JAXSEG_MULTIHOST=1; the coordinator comes from the SLURM or TPU environment). Every entry
    point calls this first: before any other jax call, and before grain shards by process."""
    if os.environ.get("JAXSEG_MULTIHOST") == "1" and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def make_mesh(devices=None, spatial: int = 1) -> Mesh:
    """A mesh over all devices (jax.sharding.Mesh: automatic axis types): 1-D ("data",) for
    spatial 1, exactly as without the option; else (devices / spatial, spatial) over
    ("data", "spatial"), neighbouring devices (on one host) sharing an image."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    if spatial == 1:
        return Mesh(devices, (DATA_AXIS,))
    if spatial < 1 or devices.size % spatial:
        raise ValueError(f"mesh.spatial={spatial} does not divide {devices.size} devices")
    return Mesh(devices.reshape(-1, spatial), (DATA_AXIS, SPATIAL_AXIS))


def spatial_size(mesh: Mesh) -> int:
    """Devices that share one image (1 without a spatial axis)."""
    return dict(mesh.shape).get(SPATIAL_AXIS, 1)


def spatial_sharding(mesh: Mesh) -> NamedSharding | None:
    """[B,H,...] arrays: batch over "data", height over "spatial"; None without a spatial
    axis (the step then adds no constraint: today's program)."""
    if spatial_size(mesh) == 1:
        return None
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS, SPATIAL_AXIS))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis; other axes whole (with a spatial
    axis: replicated over it; the train step splits the height itself)."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "batch_size") -> int:
    """Returns the per-process batch; the global batch must split evenly over the devices
    of the data axis (all of them without a spatial axis)."""
    devices = mesh.shape[DATA_AXIS]
    if global_batch % devices:
        over = f"{devices} devices"
        if spatial_size(mesh) > 1:
            over = f"{devices} data replicas (mesh.spatial={spatial_size(mesh)})"
        raise ValueError(
            f"{what}={global_batch} does not split over {over}; use a multiple of {devices}"
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
