"""benchmarks/gpu_suite.py: the plan of the full suite, its bookkeeping (time cap, budget,
partial torch records, tables) and a CPU dry run, so the GPU command cannot rot unseen."""

import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(REPO, "benchmarks")
SUITE = os.path.join(BENCHMARKS, "gpu_suite.py")


@pytest.fixture(scope="module")
def suite():
    sys.path.insert(0, BENCHMARKS)  # the suite imports compare.py as its script would
    try:
        spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(BENCHMARKS)


def test_importing_the_benchmark_loads_no_optional_dependency():
    # The suite's setup on a CUDA image is `pip install grain ml-collections simplejpeg`: the
    # benchmark must not need TFDS, TensorBoard or the export extras, and must leave torch
    # to the reference's own process.
    code = (
        "import sys, jaxseg.benchmark\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    loaded = set(out.strip().split(","))
    optional = {"tensorflow_datasets", "tensorflow", "tensorboardX", "torch", "jax2onnx"}
    optional |= {"onnx", "onnxruntime", "safetensors", "libtpu"}
    assert loaded & optional == set()
    assert {"jax", "flax", "optax", "grain", "ml_collections"} <= loaded


def test_plan_of_the_full_suite(suite, tmp_path):
    args = suite.parse_args(["--out", str(tmp_path)])
    runs = suite.plan(args, torch_ok=True)
    parts = [r.part for r in runs]
    # train: 5 jaxseg + 5 torch; atrous: the 3 dilated; pipeline: 16 and 8 workers; infer: 10.
    assert parts == ["train"] * 10 + ["atrous"] * 3 + ["pipeline"] * 2 + ["infer"] * 10 + ["data"]
    assert [r.model for r in runs[:10:2]] == list(suite.MODELS)
    assert [r.label for r in runs[:4]] == ["jaxseg", "torch", "jaxseg atrous=plain", "torch"]
    assert [r.model for r in runs[10:13]] == ["deeplabv3plus", "deeplabv3", "pspnet"]
    for run in runs[:-1]:
        command = " ".join(run.command)
        assert "--batch 16" in command and "--size 512x512" in command
        assert "--dtype bf16" in command and "--classes 21" in command
        assert run.command[run.command.index("--results") + 1] == "RESULTS"
        assert run.skip == ""
    for run in runs:
        impl = [a for a in run.command if a.startswith("--config.model.atrous_impl=")]
        expected = {"plain", "space_to_batch"} if run.model in suite.DILATED else set()
        assert {a.split("=")[1] for a in impl} <= expected
        jaxseg_step = run.label != "torch" and run.part != "data"
        assert bool(impl) == (run.model in suite.DILATED and jaxseg_step)
    assert all("--config.model.atrous_impl=space_to_batch" in r.command for r in runs[10:13])
    torch = {(r.part, r.model): r.command for r in runs if r.label == "torch"}
    assert torch.keys() == {(p, m) for p in ("train", "infer") for m in suite.MODELS}
    assert all(r.expects == ("eager", "compiled") for r in runs if r.label == "torch")
    pspnet = torch["train", "pspnet"]
    assert pspnet[pspnet.index("--aux-weight") + 1] == "0.4"
    assert pspnet[pspnet.index("--backbone") + 1] == "resnet50"
    deeplabv3 = torch["train", "deeplabv3"]
    assert deeplabv3[deeplabv3.index("--output-stride") + 1] == "8" and "--aux-head" in deeplabv3
    deeplab = torch["train", "deeplabv3plus"]
    assert deeplab[deeplab.index("--output-stride") + 1] == "16" and "--aux-head" not in deeplab
    segformer = torch["train", "segformer"]
    assert segformer[segformer.index("--backbone") + 1] == "mit_b2"
    unet = torch["infer", "unet"]
    assert unet[unet.index("--base-width") + 1] == "64" and "--mode" in unet
    for run, workers in zip(runs[13:15], (16, 8), strict=True):
        assert run.model == "deeplabv3plus" and "--pipeline" in run.command
        assert f"--config.loader.num_workers={workers}" in run.command
        # More steps after more warm-up than the others: grain's workers start and fill.
        assert run.command[run.command.index("--steps") + 1] == "20"
        assert run.command[run.command.index("--warmup") + 1] == "5"
    data = runs[-1].command
    assert data[1:3] == ("-m", "jaxseg.benchmark_input") and "--workers=16,8" in data
    assert data[data.index("--config") + 1] == "experiments/deeplab.py"

    no_torch = suite.plan(args, torch_ok=False)
    assert [r.skip for r in no_torch if r.label == "torch"] == [
        "skipped: torch not importable"
    ] * 10


def test_bad_flags_name_the_flag(suite, capsys):
    with pytest.raises(SystemExit) as e:
        suite.parse_args(["--out", "x", "--only", "unet,fcn8"])
    assert e.value.code == 2 and "--only: unknown model 'fcn8'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        suite.parse_args(["--out", "x", "--parts", "train,speed"])
    assert "--parts: unknown part 'speed'" in capsys.readouterr().err
    args = suite.parse_args(["--out", "x", "--only", "pspnet", "--dry-run"])
    assert args.models == ("unet",) and args.batch == 8 and args.no_torch_compile


def _fake(record: dict | None, sleep: float = 0.0, pid_file: str = "") -> tuple[str, ...]:
    """A command that appends record to its --results file, starts a sleeping child (whose
    pid goes to pid_file), then sleeps: a stand-in for a benchmark process."""
    code = "import json, subprocess, sys, time\n"
    if record:
        code += f"open(sys.argv[2], 'a').write(json.dumps({record!r}) + '\\n')\n"
    if pid_file:
        code += "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        code += f"open({pid_file!r}, 'w').write(str(child.pid))\n"
    code += f"time.sleep({sleep})\n"
    return (sys.executable, "-c", code, "--results", "RESULTS")


def _step(framework: str, images_per_s: float, **more) -> dict:
    return {
        "framework": framework,
        "model": "unet",
        "mode": "train",
        "params": 29_661,
        "images_per_s": images_per_s,
        "median_ms": 8e3 / images_per_s,
        "p90_ms": 9e3 / images_per_s,
        "compile_s": 2.0,
        "device_kind": "cpu",
        "device_count": 1,
        **more,
    }


def _gone(pid: int, wait_s: float = 5.0) -> bool:
    """Whether pid ends within wait_s (SIGKILL is delivered, not waited for, by killpg)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with open(f"/proc/{pid}/status") as f:
                if "\nState:\tZ" in f.read():  # ended; only its parent (init) may reap it
                    return True
        except FileNotFoundError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_cap_kills_the_process_group_and_keeps_partial_records(suite, tmp_path):
    args = suite.parse_args(["--out", str(tmp_path), "--cap", "1"])
    jax_record = _step("jaxseg", 100.0, lower_s=0.5, flops_per_step=3e9, mfu=None)
    eager = _step("torch", 50.0, variant="eager")
    pid_file = str(tmp_path / "child.pid")
    runs = [
        suite.Run("train", "unet", "jaxseg", _fake(jax_record), ("jaxseg",)),
        suite.Run("train", "unet", "torch", _fake(eager, 30, pid_file), ("eager", "compiled")),
    ]
    records = suite.run_suite(args, runs, ["--out", "X"])
    status = [(r["suite"]["label"], r["suite"]["status"]) for r in records]
    assert status == [
        ("jaxseg", "ok"),
        ("torch eager", "ok"),  # written before the cap struck
        ("torch compiled", "timeout (1 s)"),
    ]
    assert 1.0 <= records[1]["suite"]["wall_s"] < 10
    assert _gone(int((tmp_path / "child.pid").read_text()))  # the whole group was killed
    saved = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert saved == records
    table = (tmp_path / "table.md").read_text()
    # jaxseg 100 images/s against the better torch variant, eager at 50: ratio 2.
    row = "| unet | 29,661 | jaxseg | 100.00 | 80.00 | 90.00 | 2.5 | 3.0 | n/a | n/a | 2.000 |"
    assert row in table
    assert "| unet | 29,661 | torch eager | 50.00 | 160.00 | 180.00 | 2.0 |" in table
    assert "| unet | | torch compiled | timeout (1 s) |" in table
    assert (tmp_path / "logs" / "02_train_unet_torch.log").read_text().startswith("$ ")


def test_runs_that_cannot_start_within_the_budget_are_skipped(suite, tmp_path, monkeypatch):
    # Only lower bounds on elapsed time matter here: the first run sleeps 2 s of a 3 s
    # budget, so at most 1 s is left, under the 1.5 s a run needs to start.
    monkeypatch.setattr(suite, "MIN_START_S", 1.5)
    args = suite.parse_args(["--out", str(tmp_path), "--budget", "3"])
    record = _step("jaxseg", 100.0, lower_s=0.5)
    runs = [
        suite.Run("train", "unet", "jaxseg", _fake(record, 2), ("jaxseg",)),
        suite.Run("infer", "unet", "jaxseg", _fake(record), ("jaxseg",)),
    ]
    records = suite.run_suite(args, runs, ["--out", "X"])
    assert [r["suite"]["status"] for r in records] == ["ok", "skipped: budget (3 s) spent"]
    assert records[1]["suite"]["wall_s"] == 0.0
    assert not (tmp_path / "logs" / "02_infer_unet_jaxseg.log").exists()
    assert "## Inference" in (tmp_path / "table.md").read_text()


def test_dry_run_times_inference_in_both_frameworks(tmp_path):
    # The whole dry run (all parts: ~70 s on 2 shared cores) is the slow test below; here
    # the inference part only, through the real command line.
    out = tmp_path / "suite"
    done = subprocess.run(
        [sys.executable, SUITE, "--dry-run", "--parts", "infer", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    jax_record, torch_record = records
    assert jax_record["suite"]["status"] == "ok" and jax_record["mode"] == "infer"
    assert (jax_record["params"], jax_record["batch"], jax_record["size"]) == (29_661, 8, [32, 32])
    assert jax_record["num_classes"] == 5 and jax_record["device_count"] == 8
    table = (out / "table.md").read_text()
    assert f"| unet | 29,661 | jaxseg | {jax_record['images_per_s']:.2f} |" in table
    if importlib.util.find_spec("torch") is None:
        assert torch_record["suite"]["status"] == "skipped: torch not importable"
        return
    assert torch_record["suite"]["status"] == "ok" and torch_record["variant"] == "eager"
    assert torch_record["params"] == 29_661
    ratio = jax_record["images_per_s"] / torch_record["images_per_s"]
    assert f"| {ratio:.3f} |" in table


@pytest.mark.slow
def test_whole_dry_run(tmp_path):
    out = tmp_path / "suite"
    subprocess.run(
        [sys.executable, SUITE, "--dry-run", "--out", str(out)], check=True, cwd=REPO, timeout=900
    )
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    parts = [(r["suite"]["part"], r["suite"]["label"]) for r in records]
    assert parts == [
        ("train", "jaxseg"),
        ("train", "torch eager"),
        ("pipeline", "jaxseg, 0 workers"),
        ("infer", "jaxseg"),
        ("infer", "torch eager"),
        ("data", "jaxseg, data only"),
    ]
    torch_ok = importlib.util.find_spec("torch") is not None
    for r in records:
        expected = "ok" if torch_ok or r["framework"] == "jaxseg" else "skipped"
        assert r["suite"]["status"].startswith(expected), r["suite"]
    assert 0 <= records[2]["pipeline"]["input_stall"] <= 1
    assert list(records[5]["images_per_s"]) == ["0"]
    table = (out / "table.md").read_text()
    for title in (
        "## Train step",
        "## Inference",
        "## Input pipeline feeding",
        "## Input pipeline alone",
    ):
        assert title in table
