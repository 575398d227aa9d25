"""jaxseg against PyTorch on the same model, batch, size and dtype, one after the other.

    python benchmarks/compare.py --model unet --size 256x256 --batch 4 --dtype f32 \
        --steps 10 --warmup 3
    python benchmarks/compare.py --model deeplabv3plus --size 512x512 --batch 16 --dtype bf16

Runs `python -m jaxseg.benchmark` and then benchmarks/torch_reference.py as separate
processes (each framework has the machine to itself) and prints jaxseg images/s, torch
eager and torch.compile images/s and the ratio jaxseg / max(torch). The jaxseg side
loads the model's experiment file (--config overrides it; --config.* flags are passed
on), pins the architecture the name stands for, and trains with SGD and plain
cross-entropy as the reference does; the torch side then takes the number of classes
and the architecture options from jaxseg's JSON record, so both build the same network
(the table shows both parameter counts). Both append their JSON lines to --results
(default runs/compare.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (experiment file, config overrides pinning the architecture)
MODELS = {
    "unet": ("experiments/unet.py", {"model.name": "unet"}),
    "deeplabv3plus": (
        "experiments/deeplab.py",
        {"model.name": "deeplabv3plus", "model.backbone": "resnet50", "model.output_stride": 16},
    ),
    "deeplabv3": (
        "experiments/deeplabv3.py",
        {"model.name": "deeplabv3", "model.backbone": "resnet50", "model.output_stride": 8},
    ),
    "pspnet": ("experiments/pspnet.py", {"model.name": "pspnet", "model.backbone": "resnet50"}),
    "segformer": (
        "experiments/segformer.py:b2",
        {"model.name": "segformer", "model.backbone": "mit_b2"},
    ),
    "fcn": ("experiments/fcn.py", {"model.name": "fcn", "model.backbone": "resnet50"}),
    "lraspp": ("experiments/lraspp.py", {"model.name": "lraspp"}),
}
# jaxseg options the torch reference cannot mirror (implementation switches such as
# atrous_impl compute the same function and need no twin).
UNSUPPORTED = {"separable": True}


def parse_args(argv) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=sorted(MODELS))
    p.add_argument("--config", help="experiment file[:arg] (default: the model's)")
    p.add_argument("--mode", choices=("train", "infer"), default="train")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", default="512x512", help="HxW")
    p.add_argument("--dtype", choices=("bf16", "f32"), default="f32")
    p.add_argument("--classes", type=int, help="default: the experiment dataset's")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="torch: eager mode only")
    p.add_argument("--results", default=os.path.join("runs", "compare.jsonl"))
    args, overrides = p.parse_known_args(argv)
    bad = [a for a in overrides if not a.startswith("--config.")]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)}")
    return args, overrides


def _run(command: list[str], results: str) -> list[dict]:
    """Runs command (streaming its output); returns the JSON lines it appended to results."""
    before = 0
    if os.path.exists(results):
        with open(results) as f:
            before = sum(1 for _ in f)
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)
    with open(results) as f:
        return [json.loads(line) for line in f.readlines()[before:]]


def jaxseg_command(args, overrides: list[str], results: str) -> list[str]:
    spec, pinned = MODELS[args.model]
    if args.config:  # relative to the caller's directory; the command runs in the repository
        path, colon, arg = args.config.partition(":")
        spec = os.path.abspath(path) + colon + arg
    command = [sys.executable, "-m", "jaxseg.benchmark", "--config", spec]
    command += [f"--config.{k}={v}" for k, v in pinned.items()]
    command += ["--config.optim.name=sgd", "--config.loss.terms=(('ce', 1.0),)"]
    command += [*overrides, "--mode", args.mode, "--batch", str(args.batch)]
    command += ["--size", args.size, "--dtype", args.dtype, "--steps", str(args.steps)]
    command += ["--warmup", str(args.warmup), "--results", results]
    return command + (["--classes", str(args.classes)] if args.classes else [])


def torch_command(args, jax_record: dict, results: str) -> list[str]:
    """torch_reference.py's command line for the network jaxseg's record describes."""
    options = jax_record["model_options"]
    for key, value in UNSUPPORTED.items():
        if options.get(key) == value:
            raise SystemExit(f"compare: the torch reference has no {key}={value!r} variant")
    if options.get("multi_grid"):
        raise SystemExit("compare: the torch reference uses torchvision's dilations only")
    h, w = jax_record["size"]
    command = [sys.executable, os.path.join(REPO, "benchmarks", "torch_reference.py")]
    command += ["--model", jax_record["model"], "--classes", str(jax_record["num_classes"])]
    command += ["--mode", args.mode, "--batch", str(args.batch), "--size", f"{h}x{w}"]
    command += ["--dtype", args.dtype, "--steps", str(args.steps)]
    command += ["--warmup", str(args.warmup), "--results", results]
    flags = {"base_width": "--base-width", "depth": "--depth", "up_mode": "--up-mode"}
    flags |= {"backbone": "--backbone", "output_stride": "--output-stride"}
    for key, flag in flags.items():
        if key in options:
            command += [flag, str(options[key])]
    if options.get("aux_head"):
        command += ["--aux-head", "--aux-weight", str(jax_record["aux_weights"].get("aux", 0.0))]
    return command + (["--no-compile"] if args.no_compile else [])


def format_summary(jax_record: dict, torch_records: list[dict]) -> tuple[str, float]:
    """The side-by-side table and the ratio jaxseg / max(torch) images/s."""
    r = jax_record
    h, w = r["size"]
    best = max(t["images_per_s"] for t in torch_records)
    ratio = r["images_per_s"] / best
    lines = [
        f"{r['model']}, {r['mode']}, batch {r['batch']}, {h}x{w}, {r['dtype']}, "
        f"{r['device_count']} x {r['device_kind']}",
        f"  {'':<16} {'params':>12} {'images/s':>10} {'median ms':>10} {'p90 ms':>10}",
    ]
    rows = [("jaxseg", r)] + [(f"torch {t['variant']}", t) for t in torch_records]
    for name, x in rows:
        lines.append(
            f"  {name:<16} {x['params']:>12,} {x['images_per_s']:>10.2f} "
            f"{x['median_ms']:>10.2f} {x['p90_ms']:>10.2f}"
        )
    lines.append(f"  ratio jaxseg / max(torch): {ratio:.3f}")
    return "\n".join(lines), ratio


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args, overrides = parse_args(argv)
    results = os.path.abspath(args.results)
    os.makedirs(os.path.dirname(results), exist_ok=True)
    (jax_record,) = _run(jaxseg_command(args, overrides, results), results)
    torch_records = _run(torch_command(args, jax_record, results), results)
    table, ratio = format_summary(jax_record, torch_records)
    print(table, flush=True)
    return {"jaxseg": jax_record, "torch": torch_records, "ratio": ratio}


if __name__ == "__main__":
    main()
