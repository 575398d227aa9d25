"""The accelerator suite: jaxseg against PyTorch on the five reference models, one command.

    python benchmarks/gpu_suite.py --out runs/gpu_suite
    python benchmarks/gpu_suite.py --out runs/gpu_suite --only deeplabv3plus,pspnet --cap 120
    python benchmarks/gpu_suite.py --dry-run --out runs/gpu_suite_dry   # CPU: tiny, one model

For each model of --only (default all five: unet = U-Net base 64, deeplabv3plus = R50 OS16,
deeplabv3 = R50 OS8, pspnet = R50 OS8, segformer = MiT-B2) at --size 512x512, --dtype bf16,
--batch 16, --classes 21, the runs go in this order, most wanted first, so that a window
that closes early has lost the least (--parts picks some):

1. train: `python -m jaxseg.benchmark` (model.atrous_impl=plain for the dilated models),
   then benchmarks/torch_reference.py, eager and torch.compile (channels_last, bf16
   autocast), model by model; benchmarks/compare.py builds both command lines, so both
   sides build the same network and train it with SGD and cross-entropy (+ aux heads);
2. atrous: jaxseg again with model.atrous_impl=space_to_batch (deeplabv3plus, deeplabv3,
   pspnet: the dilated ones);
3. pipeline: DeepLabV3+ training fed by the real grain pipeline with 16, then 8 worker
   processes, 512x512 crops with the recipe's augmentation plus photometric distortion:
   images/s and the input stall (`jaxseg.benchmark --pipeline`);
4. infer: forward + argmax at the same batch, jaxseg, then torch eager and compiled;
5. data: the pipeline alone (`jaxseg.benchmark_input`), 8 and 16 workers.

Each run is its own process (each framework has the device to itself; a crash or a hang
costs one run), killed with its process group after --cap seconds; a run that cannot
start before --budget seconds have passed is skipped. Under --out: records.jsonl (each
benchmark record plus "suite": part, label, status, wall seconds, command; a stub for runs
that gave none), table.md (markdown tables, device, versions, the command), logs/ (each
run's output) and raw/ (each run's own JSON lines).

--dry-run: U-Net base 8, depth 2, 5 classes, 32x32, batch 8, f32, 2 steps, grain in the
main process, torch eager only: minutes on a CPU; torch rows run when torch is importable
and say "skipped" otherwise.

Setup on a CUDA image that has jax, flax, optax, orbax-checkpoint, torch, torchvision and
timm: `pip install grain ml-collections simplejpeg`, nothing else (README, "Benchmarks"). The suite
puts the repository on PYTHONPATH for its runs; no install of jaxseg is needed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from typing import NamedTuple

import compare

REPO = compare.REPO
sys.path.insert(0, REPO)  # jaxseg without an install, as the runs get it on PYTHONPATH

from jaxseg import benchmark_steps, cli, recipe  # noqa: E402

MODELS = ("unet", "deeplabv3plus", "deeplabv3", "pspnet", "segformer")
DILATED = ("deeplabv3plus", "deeplabv3", "pspnet")  # atrous_impl acts on these
PARTS = ("train", "atrous", "pipeline", "infer", "data")
PIPELINE_MODEL = "deeplabv3plus"
PIPELINE_WORKERS = (16, 8)
# The pipeline runs time more steps after more warm-up: the first batches wait for the
# worker processes to start and fill their buffers.
PIPELINE_STEPS, PIPELINE_WARMUP = 20, 5
DRY = {
    "models": ("unet",),
    "overrides": ("--config.model.base_width=8", "--config.model.depth=2"),
    "size": "32x32",
    "batch": 8,
    "dtype": "f32",
    "classes": 5,
    "steps": 2,
    "warmup": 1,
    "workers": (0,),
}
MIN_START_S = 20  # a run needs about this to import, build and compile anything


class Run(NamedTuple):
    part: str  # one of PARTS
    model: str  # a key of compare.MODELS
    label: str  # the row's name in the table, e.g. "jaxseg atrous=plain", "torch"
    command: tuple[str, ...]  # None-free argv; empty for runs that cannot happen here
    expects: tuple[str, ...]  # torch: the variants it writes ("eager", "compiled")
    skip: str = ""  # why the run is not started ("" runs it)


def parse_args(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for records, table and logs")
    p.add_argument("--only", default=",".join(MODELS), help=f"models, of {','.join(MODELS)}")
    p.add_argument("--parts", default=",".join(PARTS), help=f"of {','.join(PARTS)}")
    p.add_argument("--size", default="512x512", help="HxW")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dtype", choices=("bf16", "f32"), default="bf16")
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--steps", type=int, default=10, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--cap", type=float, default=150.0, help="seconds a run may take")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for the whole suite")
    p.add_argument("--no-torch-compile", action="store_true", help="torch eager only")
    p.add_argument("--dry-run", action="store_true", help="CPU: tiny sizes, one model")
    args = p.parse_args(argv)
    models = [m for m in args.only.split(",") if m]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        p.error(f"--only: unknown model {bad[0] if bad else '(none)'!r}; valid: {','.join(MODELS)}")
    parts = [x for x in args.parts.split(",") if x]
    bad = [x for x in parts if x not in PARTS]
    if bad or not parts:
        p.error(f"--parts: unknown part {bad[0] if bad else '(none)'!r}; valid: {','.join(PARTS)}")
    if args.cap <= 0 or args.budget <= 0:
        p.error("--cap and --budget must be positive seconds")
    args.models, args.parts = tuple(models), tuple(parts)
    args.overrides = ()
    args.workers = PIPELINE_WORKERS
    if args.dry_run:
        args.models = tuple(m for m in DRY["models"] if m in models) or DRY["models"]
        args.overrides = DRY["overrides"]
        args.size, args.batch, args.dtype = DRY["size"], DRY["batch"], DRY["dtype"]
        args.classes, args.steps, args.warmup = DRY["classes"], DRY["steps"], DRY["warmup"]
        args.workers = DRY["workers"]
        args.no_torch_compile = True
    return args


def _compare_args(args, model: str, mode: str, **changes) -> argparse.Namespace:
    """The namespace compare.jaxseg_command and compare.torch_command read."""
    fields = dict(
        model=model,
        config=None,
        mode=mode,
        batch=args.batch,
        size=args.size,
        dtype=args.dtype,
        classes=args.classes,
        steps=args.steps,
        warmup=args.warmup,
        no_compile=args.no_torch_compile,
    )
    return argparse.Namespace(**(fields | changes))


def mirror_record(args, model: str) -> dict:
    """What compare.torch_command reads of a jaxseg record, built here without running
    anything: the options of the network jaxseg will build (no init, no compile)."""
    spec, pinned = compare.MODELS[model]
    config = cli.load_experiment(
        os.path.join(REPO, spec),
        *[f"--config.{k}={v}" for k, v in pinned.items()],
        *args.overrides,
    )
    net = recipe.build_model(config, args.classes)
    return {
        "model": config.model.name,
        "model_options": benchmark_steps.model_options(config, net),
        "num_classes": args.classes,
        "aux_weights": {str(n): float(w) for n, w in config.loss.aux_weights},
        "size": list(cli.parse_size(args.size)),
    }


def _impl(model: str, impl: str) -> tuple[str, tuple[str, ...]]:
    """(row label, flags) of a jaxseg run with model.atrous_impl=impl where it acts."""
    if model not in DILATED:
        return "jaxseg", ()
    return f"jaxseg atrous={impl}", (f"--config.model.atrous_impl={impl}",)


def plan(args, torch_ok: bool) -> list[Run]:
    """Every run of the suite in the order it runs: parts in PARTS order, models within.
    Commands write to the placeholder RESULTS, replaced per run by execute()."""
    torch_variants = ("eager",) if args.no_torch_compile else ("eager", "compiled")
    torch_skip = "" if torch_ok else "skipped: torch not importable"
    runs = []

    def jaxseg(part, model, label, flags=(), mode="train", **changes):
        command = compare.jaxseg_command(
            _compare_args(args, model, mode, **changes), list(args.overrides), "RESULTS"
        )
        runs.append(Run(part, model, label, (*command, *flags), ("jaxseg",)))

    def torch(part, model, mode):
        command = compare.torch_command(
            _compare_args(args, model, mode), mirror_record(args, model), "RESULTS"
        )
        runs.append(Run(part, model, "torch", tuple(command), torch_variants, torch_skip))

    pipeline_model = args.models[0] if args.dry_run else PIPELINE_MODEL
    steps, warmup = args.steps, args.warmup
    if not args.dry_run:
        steps, warmup = max(steps, PIPELINE_STEPS), max(warmup, PIPELINE_WARMUP)
    for part in args.parts:
        if part in ("train", "infer"):
            for model in args.models:
                jaxseg(part, model, *_impl(model, "plain"), mode=part)
                torch(part, model, part)
        elif part == "atrous":
            for model in args.models:
                if model in DILATED:
                    jaxseg(part, model, *_impl(model, "space_to_batch"))
        elif pipeline_model not in args.models:
            continue
        elif part == "pipeline":
            for workers in args.workers:
                flags = _impl(pipeline_model, "plain")[1] + (
                    "--pipeline",
                    f"--config.loader.num_workers={workers}",
                    "--config.augment.photometric=True",
                )
                label = f"jaxseg, {workers} workers"
                jaxseg(part, pipeline_model, label, flags=flags, steps=steps, warmup=warmup)
        else:  # data: the input pipeline alone
            spec, _ = compare.MODELS[pipeline_model]
            command = [sys.executable, "-m", "jaxseg.benchmark_input", "--config", spec]
            command += [*args.overrides, "--config.augment.photometric=True", f"--size={args.size}"]
            command += [f"--batch={args.batch}", f"--workers={','.join(map(str, args.workers))}"]
            command += [f"--batches={steps}", "--results", "RESULTS"]
            runs.append(Run(part, pipeline_model, "jaxseg, data only", tuple(command), ("jaxseg",)))
    return runs


def _stub(run: Run, variant: str) -> dict:
    """The record of a run (or torch variant) that wrote none: what it was, no figures."""
    mode = "train" if run.part in ("atrous", "pipeline") else run.part
    framework = "torch" if run.label == "torch" else "jaxseg"
    return {"framework": framework, "model": run.model, "mode": mode, "variant": variant}


def execute(run: Run, index: int, out: str, timeout: float) -> tuple[str, float, list[dict]]:
    """Runs one command in its own process group, at most `timeout` seconds; returns
    (status, wall seconds, the records it appended). "ok", "failed (exit N)" or "timeout"."""
    name = f"{index:02d}_{run.part}_{run.model}_{run.label.replace(' ', '_').replace(',', '')}"
    results = os.path.join(out, "raw", f"{name}.jsonl")
    command = [results if a == "RESULTS" else a for a in run.command]
    if os.path.exists(results):  # a previous suite's, in the same --out
        os.remove(results)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [env.get("PYTHONPATH")])])
    start = time.perf_counter()
    with open(os.path.join(out, "logs", f"{name}.log"), "w") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        # A session of its own: on timeout the whole group goes, grain workers included.
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = proc.wait(timeout=timeout)
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = f"timeout ({timeout:.0f} s)"
    wall = time.perf_counter() - start
    records = []
    if os.path.exists(results):
        with open(results) as f:
            records = [json.loads(line) for line in f if line.strip()]
    return status, wall, records


def run_suite(args, runs: list[Run], argv: list[str]) -> list[dict]:
    """Executes runs in order within --budget; returns one record per expected result,
    each with "suite": part, label, variant, status, wall_s, command."""
    for sub in ("logs", "raw"):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    records_path = os.path.join(args.out, "records.jsonl")
    open(records_path, "w").close()
    start = time.perf_counter()
    records = []
    for index, run in enumerate(runs, 1):
        left = args.budget - (time.perf_counter() - start)
        status, wall, produced = run.skip, 0.0, []
        if not status and left < MIN_START_S:
            status = f"skipped: budget ({args.budget:.0f} s) spent"
        if not status:
            print(f"[{index}/{len(runs)}] {run.part} {run.model} {run.label} ...", flush=True)
            status, wall, produced = execute(run, index, args.out, min(args.cap, left))
        by_variant = {r.get("variant", "jaxseg"): r for r in produced}
        for variant in run.expects:
            record = by_variant.get(variant)
            ok = record is not None
            record = record or _stub(run, variant)
            # A torch run stopped during torch.compile still wrote its eager record.
            record["suite"] = {
                "part": run.part,
                "label": run.label if run.label != "torch" else f"torch {variant}",
                "status": "ok" if ok else status if status != "ok" else "no record",
                "run_status": status,
                "wall_s": wall,
                "command": shlex.join(run.command),
            }
            records.append(record)
            with open(records_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"    {record['suite']['label']}: {_summary(record)}", flush=True)
    total = time.perf_counter() - start
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(format_tables(records, args, argv, total))
    print(f"suite: {len(runs)} runs in {total:.0f} s; {records_path}, table.md", flush=True)
    return records


def _summary(r: dict) -> str:
    if r["suite"]["status"] != "ok":
        return r["suite"]["status"]
    if r.get("data_only"):
        return ", ".join(f"{w} workers {v:.1f} images/s" for w, v in r["images_per_s"].items())
    text = f"{r['images_per_s']:.2f} images/s, median {r['median_ms']:.1f} ms"
    if r.get("pipeline"):
        p = r["pipeline"]
        text += f"; pipeline {p['images_per_s']:.2f} images/s, stall {p['input_stall']:.1%}"
    return text


def _cell(value, spec: str, scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, spec)


def _versions(records: list[dict]) -> str:
    found = {}
    for r in records:
        for name, version in (r.get("versions") or {}).items():  # jaxseg's records
            if name in ("jax", "jaxlib", "flax"):
                found.setdefault(name, version)
        for key in ("jax_version", "jaxlib_version", "flax_version", "torch_version"):
            if r.get(key):
                found.setdefault(key.removesuffix("_version"), r[key])
    return ", ".join(f"{k} {v}" for k, v in found.items()) or "n/a"


def _step_table(records: list[dict], models) -> list[str]:
    """One row per run of the step benchmarks, models in order; ratios against the better
    torch variant of the same model and mode."""
    head = (
        "| model | params | run | images/s | median ms | p90 ms | compile s | GFLOP/step "
        "| MFU | peak memory GiB | jaxseg / best torch |"
    )
    lines = [head, "|" + "---|" * 11]
    for model in models:
        rows = [r for r in records if r["model"] == model]
        ok = [r for r in rows if r["suite"]["status"] == "ok"]
        best = max((r["images_per_s"] for r in ok if r["framework"] == "torch"), default=None)
        for r in rows:
            s = r["suite"]
            if s["status"] != "ok":
                lines.append(f"| {model} | | {s['label']} | {s['status']} |" + " |" * 7)
                continue
            compile_s = r.get("compile_s")
            if r["framework"] == "jaxseg":
                compile_s = r["lower_s"] + r["compile_s"]
                ratio = _cell(r["images_per_s"] / best if best else None, ".3f")
            else:
                ratio = ""
            lines.append(
                f"| {model} | {r['params']:,} | {s['label']} | {r['images_per_s']:.2f} "
                f"| {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {_cell(compile_s, '.1f')} "
                f"| {_cell(r.get('flops_per_step'), '.1f', 1e-9)} | {_cell(r.get('mfu'), '.1%')} "
                f"| {_cell(r.get('peak_memory_bytes'), '.2f', 2.0**-30)} | {ratio} |"
            )
    return lines


def format_tables(records: list[dict], args, argv: list[str], total_s: float) -> str:
    """table.md: the settings, then train, infer, pipeline and data tables."""
    ok = [r for r in records if r["suite"]["status"] == "ok"]
    devices = sorted(
        {f"{r['device_count']} x {r['device_kind']}" for r in ok if "device_kind" in r}
    )
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    lines = [
        "# jaxseg accelerator suite",
        "",
        f"- date: {date}; device: {', '.join(devices) or 'n/a'}; host CPUs: {os.cpu_count()}",
        f"- versions: {_versions(records)}, python {platform.python_version()}",
        f"- command: `python benchmarks/gpu_suite.py {shlex.join(argv)}` ({total_s:.0f} s)",
        f"- each run: batch {args.batch}, {args.size}, {args.dtype}, {args.classes} classes, "
        f"{args.steps} timed steps after {args.warmup} (pipeline: more), SGD + cross-entropy; "
        f"cap {args.cap:.0f} s a run, budget {args.budget:.0f} s",
    ]
    by_part = lambda *parts: [r for r in records if r["suite"]["part"] in parts]
    for title, parts in (("Train step", ("train", "atrous")), ("Inference", ("infer",))):
        if by_part(*parts):
            lines += ["", f"## {title}", "", *_step_table(by_part(*parts), args.models)]
    if by_part("pipeline"):
        lines += ["", "## Input pipeline feeding the train step", ""]
        lines += ["| run | step images/s (batch in memory) | pipeline images/s | input stall |"]
        lines += ["|---|---|---|---|"]
        for r in by_part("pipeline"):
            s, p = r["suite"], r.get("pipeline")
            if s["status"] != "ok" or not p:
                lines.append(f"| {r['model']}, {s['label']} | {s['status']} | | |")
                continue
            lines.append(
                f"| {r['model']}, {s['label']} | {r['images_per_s']:.2f} "
                f"| {p['images_per_s']:.2f} | {p['input_stall']:.1%} |"
            )
    if by_part("data"):
        lines += ["", "## Input pipeline alone", "", "| workers | images/s |", "|---|---|"]
        for r in by_part("data"):
            if r["suite"]["status"] != "ok":
                lines.append(f"| {r['suite']['status']} | |")
                continue
            lines += [f"| {w} | {v:.1f} |" for w, v in r["images_per_s"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    torch_ok = importlib.util.find_spec("torch") is not None
    return run_suite(args, plan(args, torch_ok), argv)


if __name__ == "__main__":
    main()
