"""What a device can do and what XLA says a compiled program costs: the vendors' dense peak
FLOP/s (for MFU), XLA's cost analysis, and the devices' peak memory. Read by
jaxseg.benchmark's step and AOT modes."""

from __future__ import annotations

# Dense (no sparsity) peak TFLOP/s per device from the vendors' datasheets:
# (substring of jax.Device.device_kind, bf16, f32); the first match wins. The f32 column of
# GPUs is the TF32 tensor-core peak, because XLA runs f32 convolutions and dots in TF32 on
# Ampere and later at the default precision. TPUs publish no f32 peak (their f32 matmuls
# are multi-pass bf16): None, reported as n/a.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0, 378.0),
    ("H100 NVL", 835.0, 418.0),
    ("H100", 989.0, 494.0),  # SXM: "NVIDIA H100 80GB HBM3"
    ("H200", 989.0, 494.0),
    ("A100", 312.0, 156.0),
    ("TPU v4", 275.0, None),
    ("TPU v5 lite", 197.0, None),  # v5e
    ("TPU v5e", 197.0, None),
    ("TPU v5", 459.0, None),  # v5p
    ("TPU v6", 918.0, None),  # v6e (Trillium), "TPU v6 lite"
)


def peak_tflops(device_kind: str, dtype: str) -> float | None:
    """Per-device dense peak for dtype ("bfloat16" or "float32"); None when unknown (CPU)."""
    for kind, bf16, f32 in PEAK_TFLOPS:
        if kind.lower() in device_kind.lower():
            return bf16 if dtype == "bfloat16" else f32
    return None


def flops_of(compiled) -> float | None:
    """FLOPs of one run of a compiled executable on one device, from XLA's cost analysis
    (or of a whole jax Lowered program, which has the same cost_analysis method).

    cost_analysis() has returned a dict, a list of per-module dicts, or None across jax
    versions and backends; a missing or non-positive "flops" gives None.
    """
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def peak_memory_bytes(devices) -> int | None:
    """Largest "peak_bytes_in_use" over devices; None where memory_stats() has none (CPU)."""
    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in devices]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) if peaks else None
