import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import benchmark, benchmark_input, device_stats, step_profile

UNET = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "unet.py"
)
# experiments/unet.py:quick narrowed further through --config.* overrides, to compile fast.
TINY = [
    f"{UNET}:quick",
    "--config.model.depth=2",
    "--config.model.base_width=8",
    "--size",
    "32x32",
    "--batch",
    "8",
    "--steps",
    "2",
    "--warmup",
    "1",
]


DIMS = ("NHWC", "HWIO", "NHWC")


def unet_conv_flops(batch=8, side=32, base=8, depth=2, classes=5, cin=3) -> int:
    """2 x multiply-adds of the U-Net's convolutions in one forward pass, counting, as XLA's
    cost analysis does, only 3x3 taps that fall inside the (zero-padded) image."""

    def conv3x3(side, cin, cout):
        return (side + 2 * (side - 1)) ** 2 * cin * cout  # sum over taps of valid positions

    macs, widths = 0, [base * 2**level for level in range(depth + 1)]
    for level, width in enumerate(widths):  # down path and bottleneck: double convs
        s = side >> level
        macs += conv3x3(s, cin, width) + conv3x3(s, width, width)
        cin = width
    for level in reversed(range(depth)):  # 2x2 stride-2 transposed conv, then double conv
        s, width = side >> level, widths[level]
        macs += s * s * widths[level + 1] * width
        macs += conv3x3(s, 2 * width, width) + conv3x3(s, width, width)
    macs += side * side * base * classes  # 1x1 classifier
    return 2 * batch * macs


def table(out: str) -> dict[str, str]:
    """The printed table's rows: {name: value text}."""
    return dict(re.findall(r"^  (\S.*?)\s{2,}(\S+)$", out, re.M))


def run_step_benchmark(capsys, tmp_path, *flags):
    results = tmp_path / "results.jsonl"
    record = benchmark.main(["--config", *TINY, f"--results={results}", *flags])
    out = capsys.readouterr().out
    lines = results.read_text().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == json.loads(json.dumps(record))
    return table(out), json.loads(lines[0])


def test_device_augmentation_step_takes_the_pipelines_canvas(capsys, tmp_path):
    flags = ["--pipeline", "--config.augment.backend=device", "--config.augment.photometric=True"]
    # The step compiled for the random canvas batch also takes the pipeline's batches (a
    # shape or a missing "size" would raise), and the augmentation adds its FLOPs.
    rows, r = run_step_benchmark(capsys, tmp_path, *flags)
    assert r["mode"] == "train" and 0.0 <= r["pipeline"]["input_stall"] <= 1.0
    assert r["pipeline"]["images_per_s"] > 0


def check_common(rows: dict, r: dict, mode: str) -> None:
    assert (r["model"], r["mode"], r["batch"], r["size"]) == ("unet", mode, 8, [32, 32])
    assert (r["dtype"], r["num_classes"], r["device_count"]) == ("float32", 5, 8)
    # U-Net base 8, depth 2, 5 classes: the overrides reached the model.
    assert r["params"] == 29_661
    assert r["model_options"]["base_width"] == 8 and r["model_options"]["depth"] == 2
    assert 0 < r["median_ms"] <= r["p90_ms"]
    assert len(r["step_ms"]) == 2 and r["median_ms"] == pytest.approx(sum(r["step_ms"]) / 2)
    assert r["images_per_s"] == pytest.approx(8 / (r["median_ms"] / 1e3))
    assert r["compile_s"] > 0 and r["lower_s"] > 0
    assert r["flops_per_step"] > 0 and r["flops_source"] == "compiled"  # works on CPU
    assert r["tflops_per_s"] == pytest.approx(r["flops_per_step"] / r["median_ms"] / 1e9)
    assert r["mfu"] is None and r["peak_memory_bytes"] is None  # no peak table entry on CPU
    assert r["device_kind"] == "cpu" and r["versions"]["jax"] and r["versions"]["flax"]
    assert "--size 32x32" in r["command"] and r["date"].startswith("20")
    assert rows["MFU"] == "n/a" and rows["peak memory MiB"] == "n/a"
    assert float(rows["median ms/step"]) == pytest.approx(r["median_ms"], abs=0.01)
    assert float(rows["images/s"]) == pytest.approx(r["images_per_s"], abs=0.01)
    assert float(rows["GFLOP/step"]) == pytest.approx(r["flops_per_step"] / 1e9, abs=1e-3)
    assert float(rows["compile s"]) > 0


def test_train_step_and_pipeline(capsys, tmp_path):
    profile = tmp_path / "profile"
    rows, r = run_step_benchmark(capsys, tmp_path, "--pipeline", f"--profile={profile}")
    check_common(rows, r, "train")
    # --profile (run before the pipeline takes the donated state on): the optimized HLO,
    # a trace, and the ten most expensive XLA ops of the 8 CPU devices' threads.
    assert (profile / "step.hlo.txt").read_text().startswith("HloModule")
    assert r["profile"]["trace"].startswith(str(profile)) and r["profile"]["steps"] == 3
    top = r["profile"]["top"]
    assert len(top) == 10 and all(op["share_of_step"] > 0 for op in top)
    per_step = [op["ms_per_step"] for op in top]
    assert per_step == sorted(per_step, reverse=True)
    assert 0 < sum(op["share_of_ops"] for op in top) <= 1 + 1e-9
    ratio = [op["share_of_step"] / op["share_of_ops"] for op in top]  # one factor for all
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
    assert r["optimizer"] == "adamw"
    p = r["pipeline"]
    assert 0.0 <= p["input_stall"] <= 1.0
    assert p["num_workers"] == 0 and p["median_ms"] > 0 and p["images_per_s"] > 0
    assert float(rows["input stall"]) == pytest.approx(p["input_stall"], abs=1e-3)
    # Forward, weight gradients and input gradients: about three forward passes.
    assert 2.5 < r["flops_per_step"] / unet_conv_flops() < 3.5


def test_profile_reads_device_ops_from_a_gpu_trace():
    # A GPU's trace in Perfetto's JSON: the host's events and the device's kernels on two
    # streams; only the latter count, summed by name (durations in microseconds).
    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/host:CPU"}},
        {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/device:GPU:0"}},
        {"ph": "X", "name": "PjitFunction(step)", "pid": 1, "tid": 7, "dur": 9000.0},
        {"ph": "X", "name": "sm90_xmma_fprop", "pid": 2, "tid": 1, "dur": 300.0},
        {"ph": "X", "name": "sm90_xmma_fprop", "pid": 2, "tid": 2, "dur": 100.0},
        {"ph": "X", "name": "loop_add_fusion", "pid": 2, "tid": 1, "dur": 50.0},
    ]
    seconds = step_profile.op_seconds(events)
    assert seconds == pytest.approx({"sm90_xmma_fprop": 400e-6, "loop_add_fusion": 50e-6})
    # Two steps of 1 ms: the convolution kernel takes 0.2 ms a step, 20 %, and 400 of the
    # 450 us of kernels.
    (top,) = step_profile.top_ops(seconds, steps=2, step_s=1e-3, k=1)
    assert top.pop("name") == "sm90_xmma_fprop"
    assert top == pytest.approx({"ms_per_step": 0.2, "share_of_step": 0.2, "share_of_ops": 8 / 9})


def test_infer_step(capsys, tmp_path):
    rows, r = run_step_benchmark(capsys, tmp_path, "--mode", "infer")
    check_common(rows, r, "infer")
    assert r["optimizer"] is None and r["pipeline"] is None and "input stall" not in rows
    # 95,331,840 from the convolutions; BatchNorm, ReLU and the rest add a few percent.
    assert unet_conv_flops() == 95_331_840
    assert 1.0 <= r["flops_per_step"] / unet_conv_flops() < 1.1


def test_lowered_whole_step_flops_equal_the_compiled_per_device_ones_times_devices():
    """The GPU fallback (benchmark.py counts the lowered step where XLA:GPU hides cuDNN
    convolutions) means what the compiled count means: on CPU, 8 devices, they agree."""
    mesh = jax.sharding.Mesh(jax.devices(), ("data",))
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def loss(w, x):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DIMS)
        return jnp.mean(jax.nn.relu(y) ** 2)

    step = jax.jit(jax.grad(loss), in_shardings=(whole, split), out_shardings=whole)
    lowered = step.lower(jnp.ones((3, 3, 4, 8)), jnp.ones((16, 32, 32, 4)))
    per_device = device_stats.flops_of(lowered.compile())
    # Forward and weight gradient: 2 x 2 x 16 x 32 x 32 x 3 x 3 x 4 x 8 multiply-adds' FLOPs.
    assert per_device * 8 == pytest.approx(device_stats.flops_of(lowered), rel=0.02)
    assert device_stats.flops_of(lowered) == pytest.approx(2 * 2 * 16 * 32 * 32 * 288, rel=0.1)


def test_peak_table_matches_device_kinds():
    assert device_stats.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.0
    assert device_stats.peak_tflops("NVIDIA H100 80GB HBM3", "float32") == 494.0
    assert device_stats.peak_tflops("NVIDIA H100 PCIe", "bfloat16") == 756.0
    assert device_stats.peak_tflops("NVIDIA H200", "bfloat16") == 989.0
    assert device_stats.peak_tflops("NVIDIA A100-SXM4-80GB", "bfloat16") == 312.0
    assert device_stats.peak_tflops("TPU v5 lite", "bfloat16") == 197.0
    assert device_stats.peak_tflops("TPU v5p", "bfloat16") == 459.0
    assert device_stats.peak_tflops("TPU v6 lite", "bfloat16") == 918.0
    assert device_stats.peak_tflops("TPU v4", "float32") is None
    assert device_stats.peak_tflops("cpu", "bfloat16") is None


class _Compiled:
    def __init__(self, cost):
        self.cost = cost

    def cost_analysis(self):
        if isinstance(self.cost, Exception):
            raise self.cost
        return self.cost


def test_flops_of_reads_every_cost_analysis_form():
    assert device_stats.flops_of(_Compiled({"flops": 12.0})) == 12.0
    assert device_stats.flops_of(_Compiled([{"flops": 7.0}])) == 7.0
    assert device_stats.flops_of(_Compiled([])) is None
    assert device_stats.flops_of(_Compiled(None)) is None
    assert device_stats.flops_of(_Compiled({"bytes accessed": 3.0})) is None
    assert device_stats.flops_of(_Compiled({"flops": -1.0})) is None
    assert device_stats.flops_of(_Compiled(NotImplementedError())) is None


def test_bad_flags_exit_with_status_2(capsys):
    with pytest.raises(SystemExit) as e:
        benchmark.main(["--config", f"{UNET}:quick", "--mode", "serve"])
    assert e.value.code == 2
    assert "--mode" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, command",
    [
        ("--data_only", "python -m jaxseg.benchmark_input"),
        ("--data-only", "python -m jaxseg.benchmark_input"),
        ("--aot=tpu:v5e-8", "python -m jaxseg.aot --target tpu:SLICE"),
    ],
)
def test_a_moved_flag_names_the_new_command(capsys, flag, command):
    with pytest.raises(SystemExit) as e:
        benchmark.main(["--config", f"{UNET}:quick", flag])
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("jaxseg.benchmark: error: --") and command in line


def test_benchmark_input_reports_images_per_second_per_worker_count(capsys):
    benchmark_input.main(
        [
            "--config",
            f"{UNET}:quick",
            "--workers=0,1",
            "--batches=3",
            "--config.batch_size=8",
            "--config.data.image_size=(32, 32)",
        ]
    )
    out = capsys.readouterr().out
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)$", out, re.M)
    assert [int(w) for w, _ in rows] == [0, 1]
    assert all(float(rate) > 0 for _, rate in rows)
    assert "crops 32x32, batch 8" in out
    # The per-stage table on one core: every stage, ms and images/s agreeing.
    stages = dict(
        (name.strip(), (float(ms), float(rate)))
        for name, ms, rate in re.findall(r"^  ([a-z][a-z +:/]+?)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    )
    assert {"decode", "rescale + crop", "photometric", "train transform"} <= set(stages)
    assert "device path: decode + pad" in stages
    for ms, rate in stages.values():  # ms printed to 0.01: the rate agrees where that is 1 %
        assert rate > 0 and (ms < 1 or rate == pytest.approx(1e3 / ms, rel=0.01))
