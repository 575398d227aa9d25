"""PyTorch reference throughput for jaxseg's models: eager and torch.compile.

    python benchmarks/torch_reference.py --model unet --size 256x256 --batch 4 --dtype f32
    python benchmarks/torch_reference.py --model deeplabv3plus --batch 16 --size 512x512 \
        --dtype bf16 --classes 21

Builds the model of torch_models.build (torchvision's where it has it) in channels_last,
on CUDA when available, and times the same work as `python -m jaxseg.benchmark`: u8
images and i64 masks resident on the device, normalisation inside the step, cross-entropy
(ignore_index 255, plus aux_weight x the auxiliary head's), SGD with momentum 0.9 and
weight decay 1e-4 on weights with more than one dimension (as jaxseg's mask: none on
BatchNorm or biases). bf16 runs under torch.autocast (default on CUDA; on CPU only when
asked with --dtype bf16). Each timed step ends in torch.cuda.synchronize() on GPU; the
table gives the median and 90th percentile of --steps steps after --warmup. Without
--no-compile a torch.compile'd copy of the model is timed after the eager one; its first
step (compilation included) is reported as compile_s.

Appends one JSON line per variant (eager, compiled) to --results (default
runs/torch_reference.jsonl). benchmarks/compare.py runs this after jaxseg's benchmark.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import torch_models

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


def parse_args(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="jaxseg model name, e.g. unet, deeplabv3plus")
    p.add_argument("--mode", choices=("train", "infer"), default="train")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=_size, default=(512, 512), help="HxW")
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--dtype", choices=("bf16", "f32"), help="default: bf16 on CUDA, else f32")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="time eager mode only")
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--results", default=os.path.join("runs", "torch_reference.jsonl"))
    p.add_argument("--seed", type=int, default=0)
    # jaxseg's config.model fields the architectures read:
    p.add_argument("--base-width", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--up-mode", default="transpose")
    p.add_argument("--backbone")
    p.add_argument("--output-stride", type=int)
    p.add_argument("--aux-head", action="store_true")
    p.add_argument("--aux-weight", type=float, default=0.0, help="loss weight of aux['aux']")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    return p.parse_args(argv)


def make_model(args, device) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    model = torch_models.build(
        args.model,
        args.classes,
        base_width=args.base_width,
        depth=args.depth,
        up_mode=args.up_mode,
        backbone=args.backbone,
        output_stride=args.output_stride,
        aux_head=args.aux_head,
    )
    return model.to(device, memory_format=torch.channels_last)


def make_step(model, args, device, bf16: bool):
    """A function of (images u8[B,3,H,W], masks i64[B,H,W]) running one train step or one
    forward + argmax; returns the loss or the predictions."""
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def normalize(images):
        x = (images.float() / 255.0 - mean) / std
        return x.contiguous(memory_format=torch.channels_last)

    if args.mode == "infer":
        model.eval()

        @torch.inference_mode()
        def infer(images, masks):
            with autocast():
                return model(normalize(images))["out"].argmax(1)

        return infer

    model.train()
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay}],
        lr=args.lr,
        momentum=0.9,
        weight_decay=0.0,
    )

    def train(images, masks):
        with autocast():
            out = model(normalize(images))
        # Logits in f32 for the loss, as jaxseg's models return them.
        loss = F.cross_entropy(out["out"].float(), masks, ignore_index=255)
        if args.aux_weight and "aux" in out:
            loss = loss + args.aux_weight * F.cross_entropy(
                out["aux"].float(), masks, ignore_index=255
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return train


def count_flops(step, images, masks) -> int | None:
    """FLOPs of one step by torch.utils.flop_counter (matmuls and convolutions only)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step(images, masks)
        return int(counter.get_total_flops())
    except Exception:  # the counter does not know every op on every version
        return None


def time_steps(step, images, masks, *, steps: int, warmup: int, device) -> tuple[float, list]:
    """(first step's seconds, timed steps' seconds); each step waited for."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        step(images, masks)
        sync()
        times.append(time.perf_counter() - start)
    return times[0], times[warmup:]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def run(args, argv, results: str | None = None) -> list[dict]:
    """Times each variant; appends each record to results (when given) as soon as it is
    measured, so a run stopped during torch.compile keeps the eager figures."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = (args.dtype or ("bf16" if device.type == "cuda" else "f32")) == "bf16"
    if device.type == "cuda":
        # Convolutions in TF32 for f32, as XLA does at its default precision.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    gen = torch.Generator().manual_seed(args.seed)
    h, w = args.size
    images = torch.randint(0, 256, (args.batch, 3, h, w), dtype=torch.uint8, generator=gen)
    masks = torch.randint(0, args.classes, (args.batch, h, w), dtype=torch.int64, generator=gen)
    images = images.to(device).contiguous(memory_format=torch.channels_last)
    masks = masks.to(device)
    kind = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    records = []
    for variant in ("eager",) if args.no_compile else ("eager", "compiled"):
        model = make_model(args, device)
        params = torch_models.count_params(model)
        flops = None
        if variant == "compiled":
            model = torch.compile(model)
        step = make_step(model, args, device, bf16)
        if variant == "eager":
            flops = count_flops(step, images, masks)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        first_s, times = time_steps(
            step, images, masks, steps=args.steps, warmup=args.warmup, device=device
        )
        median = statistics.median(times)
        records.append(
            {
                "framework": "torch",
                "variant": variant,
                "model": args.model,
                "params": params,
                "num_classes": args.classes,
                "mode": args.mode,
                "batch": args.batch,
                "size": [h, w],
                "dtype": "bfloat16" if bf16 else "float32",
                "optimizer": "sgd" if args.mode == "train" else None,
                "steps": args.steps,
                "warmup": args.warmup,
                "compile_s": first_s if variant == "compiled" else None,
                "first_step_s": first_s,
                "median_ms": 1e3 * median,
                "p90_ms": 1e3 * _quantile(times, 0.9),
                "images_per_s": args.batch / median,
                "flops_per_step": flops,
                "peak_memory_bytes": (
                    torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
                ),
                "step_ms": [1e3 * t for t in times],
                "host_load_1m": os.getloadavg()[0],
                "device_kind": kind,
                "device_count": 1,
                "threads": torch.get_num_threads(),
                "torch_version": torch.__version__,
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "command": shlex.join(["python", "benchmarks/torch_reference.py", *argv]),
            }
        )
        print(format_row(records[-1]), flush=True)
        if results:
            os.makedirs(os.path.dirname(results) or ".", exist_ok=True)
            with open(results, "a") as f:
                f.write(json.dumps(records[-1]) + "\n")
    return records


def format_row(r: dict) -> str:
    h, w = r["size"]
    flops = f"{r['flops_per_step'] / 1e9:.3f}" if r["flops_per_step"] else "n/a"
    return (
        f"torch {r['variant']:<8} {r['model']} ({r['params']:,} params) {r['mode']}, "
        f"batch {r['batch']}, {h}x{w}, {r['dtype']}, {r['device_kind']}: "
        f"median {r['median_ms']:.2f} ms/step, p90 {r['p90_ms']:.2f}, "
        f"{r['images_per_s']:.2f} images/s, first step {r['first_step_s']:.2f} s, "
        f"GFLOP/step (counted) {flops}"
    )


def main(argv=None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    records = run(args, argv, results=args.results)
    print(f"appended to {args.results}")
    return records


if __name__ == "__main__":
    main()
