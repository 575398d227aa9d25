"""The training input side by side, per CPU core: jaxseg's host path, the host share of its
device path, an older jaxseg checkout (--baseline), and albumentations with OpenCV (what
PyTorch segmentation users run), on the same files, the same crop and the same kinds of
work: decode image and mask, random rescale 0.5-2.0, pad and crop, horizontal flip,
brightness/contrast and hue/saturation changes.

    python benchmarks/input_pipeline.py --out runs/input_pipeline \\
        [--baseline /path/to/older/jaxseg] [--examples 24] [--rounds 5]

Each measurement runs in its own process pinned to one core (OpenCV single-threaded), and
the contenders take turns, round after round, so a change in the machine's load falls on
all of them; the table gives the median images/s per core over the rounds and the ratio to
jaxseg's host path. Data: the membrane PNGs (512x512 greyscale, read as RGB) with 512x512
crops, and 1024x2048 JPEGs (quality 90, shapes scenes rendered here) with 512x1024 crops.
albumentations (2.x) and opencv-python-headless are needed only here; without them that
column is skipped. The mapping of mmseg's PhotoMetricDistortion onto albumentations:
RandomBrightnessContrast(32/255, 0.5, p=0.75) and HueSaturationValue(18, 30, 0, p=0.75),
the same steps at about the same rates (brightness and contrast are one op there).
jaxseg's pipeline sets glibc's malloc thresholds in its own process (a third of its time
on the large JPEGs went to page faults otherwise); a second albumentations row runs with the
same settings, given as MALLOC_* environment variables, to show what they do for it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _examples(kind: str, count: int):
    """(image paths, mask paths, crop, value table) of a dataset kind."""
    if kind == "membrane":
        from jaxseg.data import MEMBRANE_ROOT

        stems = [str(i) for i in range(25)][:count]
        images = [os.path.join(MEMBRANE_ROOT, "images", f"{s}.png") for s in stems]
        masks = [os.path.join(MEMBRANE_ROOT, "masks", f"{s}.png") for s in stems]
        return images, masks, (512, 512), {0: 0, 255: 1}
    root = kind.split("=", 1)[1]
    names = sorted(os.listdir(os.path.join(root, "images")))[:count]
    images = [os.path.join(root, "images", n) for n in names]
    masks = [os.path.join(root, "masks", os.path.splitext(n)[0] + ".png") for n in names]
    return images, masks, (512, 1024), None


def _jaxseg_work(kind: str, count: int, mode: str):
    """A function of example i doing jaxseg's per-example host work (mode host or device)."""
    import numpy as np

    from jaxseg.data import folder, pipeline

    images, _, crop, value_map = _examples(kind, count)
    root = os.path.dirname(os.path.dirname(images[0]))
    stems = tuple(os.path.splitext(os.path.basename(p))[0] for p in images)
    names = ("membrane", "cell") if value_map else tuple("abcde")
    source = folder.FolderSource(
        root, "train", class_names=names, value_map=value_map, split_files={"train": stems}
    )
    if mode == "device":
        prep = pipeline.CanvasPrep(canvas=source[0]["mask"].shape, num_classes=len(names),
                                   ignore_index=255)  # fmt: skip
        return lambda i: prep.map(source[i])
    kw = {"crop_size": crop, "scale_range": (0.5, 2.0), "photometric": True}
    transform = pipeline.TrainTransform(num_classes=len(names), ignore_index=255, **kw)
    return lambda i: transform.random_map(source[i], np.random.default_rng(i))


def _albumentations_work(kind: str, count: int):
    import albumentations as A
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    images, masks, (h, w), value_map = _examples(kind, count)
    table = np.arange(256, dtype=np.uint8)
    for k, v in (value_map or {}).items():
        table[k] = v
    chain = A.Compose(
        [
            A.RandomScale(
                scale_limit=(-0.5, 1.0),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                p=1.0,
            ),  # fmt: skip
            A.PadIfNeeded(
                min_height=h,
                min_width=w,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=255,
                position="top_left",
            ),  # fmt: skip
            A.RandomCrop(h, w),
            A.HorizontalFlip(p=0.5),
            A.RandomBrightnessContrast(brightness_limit=32 / 255, contrast_limit=0.5, p=0.75),
            A.HueSaturationValue(
                hue_shift_limit=18, sat_shift_limit=30, val_shift_limit=0, p=0.75
            ),  # fmt: skip
        ]
    )

    def work(i):
        image = cv2.cvtColor(cv2.imread(images[i], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        mask = table[cv2.imread(masks[i], cv2.IMREAD_UNCHANGED)]
        return chain(image=image, mask=mask)

    return work


def worker(args) -> None:
    """One measurement, in this process on one core: prints {"images_per_s": ...}."""
    os.sched_setaffinity(0, {args.core})
    if args.contender.startswith("albumentations"):
        work = _albumentations_work(args.data, args.examples)
    else:
        work = _jaxseg_work(
            args.data, args.examples, "device" if args.contender == "device" else "host"
        )
    for i in range(min(4, args.examples)):  # warm-up: imports, first allocations
        work(i)
    start = time.perf_counter()
    for i in range(args.examples):
        work(i)
    print(json.dumps({"images_per_s": args.examples / (time.perf_counter() - start)}))


CONTENDERS = {
    "jaxseg host path": "host",
    "jaxseg device path (host share)": "device",
    "baseline jaxseg": "baseline",
    "albumentations + OpenCV": "albumentations",
    "albumentations + OpenCV, jaxseg's malloc settings": "albumentations_malloc",
}


def _run(contender: str, data: str, args, env) -> float | None:
    flags = [env["JAXSEG_PYTHON_FLAGS"]] if env.get("JAXSEG_PYTHON_FLAGS") else []
    script = os.path.abspath(__file__)
    command = [sys.executable, *flags, script, "--worker", contender, "--data", data]
    command += ["--examples", str(args.examples), "--core", str(args.core)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode:
        print(f"{contender} on {data}: failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["images_per_s"]


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/input_pipeline")
    p.add_argument("--baseline", default="", help="root of an older jaxseg checkout")
    p.add_argument("--examples", type=int, default=24)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--core", type=int, default=0)
    p.add_argument("--jpeg", default="", help="folder of 1024x2048 JPEGs (made if empty)")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--data", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        if args.worker == "baseline":
            args.contender = "host"
        else:
            args.contender = args.worker
        return worker(args)

    from jaxseg import input_throughput

    os.makedirs(args.out, exist_ok=True)
    jpeg = args.jpeg or os.path.join(args.out, "jpeg_1024x2048")
    if len(os.listdir(os.path.join(jpeg, "images")) if os.path.isdir(jpeg) else ()) < args.examples:
        input_throughput.write_folder(jpeg, count=args.examples, size=(1024, 2048))
    try:
        import albumentations  # noqa: F401
        import cv2  # noqa: F401

        have_albumentations = True
    except ImportError:
        have_albumentations = False
        print("albumentations or OpenCV not importable: that column is skipped")
    from jaxseg.data import MEMBRANE_ROOT

    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    own = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, *paths]))
    envs = {"host": own, "device": own, "albumentations": own}
    if args.baseline:
        # python -S: no site module, so no .pth file maps "jaxseg" to an editable install;
        # the interpreter's site-packages come back through PYTHONPATH, after the baseline.
        import site

        envs["baseline"] = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([os.path.abspath(args.baseline), *site.getsitepackages()]),
            JAXSEG_MEMBRANE=MEMBRANE_ROOT,
            JAXSEG_PYTHON_FLAGS="-S",
        )
    # jaxseg's pipeline sets glibc's malloc thresholds in its process
    # (pipeline.keep_freed_memory); the same settings, as environment variables, show what
    # they would do for albumentations.
    from jaxseg.data import pipeline

    envs["albumentations_malloc"] = dict(
        own,
        MALLOC_MMAP_THRESHOLD_=str(pipeline._MMAP_BYTES),
        MALLOC_TRIM_THRESHOLD_=str(pipeline._TRIM_BYTES),
    )
    if not have_albumentations:
        envs.pop("albumentations")
        envs.pop("albumentations_malloc")
    records = []
    for data in ("membrane", f"folder={jpeg}"):
        rates = {c: [] for c in envs}
        for _ in range(args.rounds):
            for contender, env in envs.items():
                rate = _run(contender, data, args, env)
                if rate is not None:
                    rates[contender].append(rate)
        for name, key in CONTENDERS.items():
            if rates.get(key):
                records.append({"data": data.split("=")[0].replace("folder", "jpeg 1024x2048"),
                                "contender": name, "images_per_s_per_core":
                                statistics.median(rates[key]), "rounds": rates[key]})  # fmt: skip
    lines = ["| data | contender | images/s per core | vs jaxseg host path |", "|---|---|---|---|"]
    for r in records:
        ref = next(
            x for x in records if x["data"] == r["data"] and x["contender"] == "jaxseg host path"
        )
        r["ratio_to_jaxseg_host"] = r["images_per_s_per_core"] / ref["images_per_s_per_core"]
        lines.append(f"| {r['data']} | {r['contender']} | {r['images_per_s_per_core']:.1f} | "
                     f"{r['ratio_to_jaxseg_host']:.2f} |")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(args.out, "records.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    return records


if __name__ == "__main__":
    main()
