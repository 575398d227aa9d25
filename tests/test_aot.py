"""Ahead-of-time compilation for TPU slices (`python -m jaxseg.aot --target tpu:SLICE`).

Without libtpu only the refusals are tested; with it (the `tpu` extra: ~210 MB, not in
the test set-up) the slow tests compile a tiny U-Net for a v5e-8 slice on this CPU host.
"""

import importlib.util
import json
import math
import os

import pytest

from jaxseg import aot
from tests.test_benchmark import TINY, UNET, unet_conv_flops

TINY = TINY[: TINY.index("--steps")]  # the step benchmark's flags without its timing ones

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(not HAS_LIBTPU, reason="needs libtpu: pip install -e '.[tpu]'")


def test_targets_name_the_valid_slices():
    assert aot.parse_target("tpu:v5e-8") == "v5e-8"
    with pytest.raises(aot.AotError, match=r"unknown TPU slice 'v5e-3'; valid: tpu:v4-8, "):
        aot.parse_target("tpu:v5e-3")
    with pytest.raises(aot.AotError, match=r"--target 'gpu:h100': only TPU slices"):
        aot.parse_target("gpu:h100")
    with pytest.raises(aot.AotError, match="only TPU slices"):
        aot.parse_target("v5e-8")
    # Chips per slice: v4/v5p names count TensorCores (two per chip), v5e/v6e chips.
    grids = {name: s.topology.split(":")[1].split("x") for name, s in aot.SLICES.items()}
    chips = {name: math.prod(int(n) for n in grid) for name, grid in grids.items()}
    assert chips == {
        "v4-8": 4,
        "v4-32": 16,
        "v5e-8": 8,
        "v5e-16": 16,
        "v5p-8": 4,
        "v5p-64": 32,
        "v6e-8": 8,
    }


class _Memory:
    argument_size_in_bytes = 300
    output_size_in_bytes = 200
    alias_size_in_bytes = 150
    temp_size_in_bytes = 1000
    generated_code_size_in_bytes = 7


class _Compiled:
    def memory_analysis(self):
        return _Memory()


def test_memory_counts_donated_outputs_once():
    m = aot.memory(_Compiled())
    assert m["total_bytes"] == 300 + 200 - 150 + 1000 + 7 == 1357
    assert m["alias_bytes"] == 150 and m["temp_bytes"] == 1000


class _Program:
    """Four lines in the form of libtpu's compiled HLO (SegFormer-B0 on v4-32 at K=1 had 61
    such instructions, at K=2 2)."""

    def as_text(self):
        return (
            "  %copy.16.remat_compressed = bf16[8,3]{1,0} copy(%copy.16)\n"
            "  %convolution_add_fusion.remat2 = bf16[8]{0} fusion(%a, %b), kind=kOutput\n"
            "  %fusion.3 = f32[8]{0} fusion(%convolution_add_fusion.remat2)\n"
            "  ROOT %tuple.1 = (f32[8]{0}) tuple(%fusion.3)\n"
        )


def test_rematerialized_counts_the_recomputed_instructions_not_their_uses():
    assert aot.rematerialized(_Program()) == 2


def test_out_of_memory_is_told_in_one_line():
    error = RuntimeError(
        "\n RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory "
        "space hbm. Used 48.52G of 15.75G hbm. Exceeded hbm capacity by 32.77G.\n\n"
        "Total hbm usage >= 48.77G:\n    reserved        258.00M\n"
    )
    assert aot.is_out_of_memory(error)
    assert aot.first_line(error) == (
        "RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory "
        "space hbm. Used 48.52G of 15.75G hbm. Exceeded hbm capacity by 32.77G."
    )
    assert not aot.is_out_of_memory(RuntimeError("INVALID_ARGUMENT: bad sharding"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--target", "tpu:v9-8"], "unknown TPU slice 'v9-8'"),
        (["--target", "tpu:v5e-8", "--pipeline"], "Unknown command line flag 'pipeline'"),
        ([], "--target"),
    ],
)
def test_bad_aot_flags_exit_with_status_2(capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        aot.main(["--config", f"{UNET}:quick", *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxseg.aot: error: ") and message in err


@pytest.mark.skipif(HAS_LIBTPU, reason="libtpu is installed")
def test_without_libtpu_the_error_says_what_to_install(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        aot.main(["--config", *TINY, "--target", "tpu:v5e-8", f"--results={tmp_path}/r.jsonl"])
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--target tpu:v5e-8: no TPU topology v5e:2x4 (the TPU runtime is not installed: " in line
    assert "pip install -e '.[tpu]')" in line
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.slow
@needs_libtpu
def test_tiny_unet_compiles_for_v5e_8(capsys, tmp_path):
    results = tmp_path / "aot.jsonl"
    record = aot.main(["--config", *TINY, "--target", "tpu:v5e-8", f"--results={results}"])
    assert json.loads(results.read_text()) == json.loads(json.dumps(record))
    assert (record["status"], record["error"]) == ("compiled", None)
    assert (record["device_count"], record["hosts"], record["device_kind"]) == (8, 2, "TPU v5 lite")
    assert (record["params"], record["batch"], record["size"]) == (29_661, 8, [32, 32])
    assert record["libtpu_version"] and record["topology"] == "v5e:2x4"
    assert record["flops_per_step"] == 8 * record["flops_per_device"]
    # Forward, weight and input gradients: TPU's count of the U-Net's convolutions (with
    # AdamW, BatchNorm and the loss) came to 4.40x the forward convolutions (libtpu 0.0.42.1).
    assert 3.0 < record["flops_per_step"] / unet_conv_flops() < 5.0
    m = record["memory"]
    # State (params, AdamW mu and nu: 3 x 29,661 f32) is donated: outputs alias arguments.
    assert m["argument_bytes"] >= 3 * 29_661 * 4 and 0 < m["alias_bytes"] <= m["argument_bytes"]
    assert record["memory_share"] == m["total_bytes"] / (16 * 2**30) < 0.01
    assert record["rematerialized"] == 0  # 1% of HBM: nothing to recompute
    out = capsys.readouterr().out
    assert "8 x TPU v5 lite (2 hosts)" in out and "status                 compiled" in out


@pytest.mark.slow
@needs_libtpu
def test_spatial_partitioning_compiles_for_v5e_8(capsys, tmp_path):
    """mesh.spatial=2 on a slice: 4 data replicas of 2 chips, each image's height split."""
    results = tmp_path / "aot.jsonl"
    flags = ["--target", "tpu:v5e-8", "--size", "64x64", "--config.mesh.spatial=2"]
    record = aot.main(["--config", *TINY, *flags, f"--results={results}"])
    assert (record["status"], record["spatial"], record["batch"]) == ("compiled", 2, 8)
    assert "8 x TPU v5 lite (2 hosts); mesh.spatial=2" in capsys.readouterr().out


@pytest.mark.slow
@needs_libtpu
def test_a_model_that_does_not_fit_reports_the_xla_line_and_exits_1(capsys, tmp_path):
    results = tmp_path / "aot.jsonl"
    # 8 images of 4096x4096 per v5e chip: activations far beyond 16 GiB.
    flags = ["--target", "tpu:v5e-8", "--size", "4096x4096", "--batch", "64"]
    with pytest.raises(SystemExit) as e:
        aot.main(["--config", *TINY, *flags, f"--results={results}"])
    assert e.value.code == 1
    record = json.loads(results.read_text())
    assert record["status"] == "out_of_memory" and record["memory"] is None
    assert "RESOURCE_EXHAUSTED" in record["error"] and "\n" not in record["error"]
    assert f"  error: {record['error']}" in capsys.readouterr().out


@pytest.mark.slow
@needs_libtpu
def test_larger_slices_have_one_device_per_chip():
    kinds = {n: aot.topology_devices(n) for n in ("v4-32", "v5p-64")}
    assert [len(d) for d in kinds.values()] == [16, 32]
    assert [d[0].device_kind for d in kinds.values()] == ["TPU v4", "TPU v5"]
    assert [len({x.process_index for x in d}) for d in kinds.values()] == [4, 8]
    assert os.environ["TPU_SKIP_MDS_QUERY"] == "1"
