"""Segment images with a trained run (or an export): palette masks, overlays, probabilities.

    python -m jaxseg.predict --workdir runs/mem --out preds/ photos/ more/*.png
    python -m jaxseg.predict --workdir runs/mem --out preds/ --config.eval.mode=slide \\
      --config.eval.crop_size="(256, 256)" --config.eval.flip=True big.tif
    python -m jaxseg.predict --exported export/mem --out preds/ photos/

Inputs are files, directories (searched recursively, in sorted order, for .png .jpg .jpeg
.tif .tiff .bmp .webp) and globs. For an input x/y/name.ext (relative to the directory it
was found in; a file given directly keeps its relative path, or its name alone when the
path is absolute or climbs out with ..), --out receives at x/y/:

    name.png            class indices as a palette PNG with the run's colours (16-bit
                        greyscale above 256 classes), the input's height and width
    name_overlay.jpg    the image blended with the class colours (--opacity)
    name_probs.npz      with --probs: float16 softmax [H,W,K] ("probs") and "class_names"

and predictions.jsonl has one line per input (size, seconds, class histogram, or the error).
Files are written atomically; a rerun skips inputs whose files exist unless --overwrite.
Untrusted files: only the formats above are decoded, images above data.max_pixels are
refused, EXIF orientation is applied, grey/RGBA/16-bit are converted as training reads them.
A refused or corrupt file is named on stderr and in the jsonl, the others are still
written, and the exit status is 1. Images of different sizes are batched on a few shared
canvases (at most --max_shapes compiled shapes).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import glob
import json
import math
import os
import sys
import time

import numpy as np
from absl import flags
from PIL import Image

from jaxseg import cli, config_checks, configs, sharding, visualize, writer
from jaxseg.data import images as image_io

JSONL = "predictions.jsonl"
ALLOWED = config_checks.INFERENCE_FIELDS  # --config.* keys that act here
# The image size limit where the run's dataset has none (Pillow's MAX_IMAGE_PIXELS default).
MAX_PIXELS = 89_478_485


@dataclasses.dataclass
class Input:
    path: str  # the file
    rel: str  # output stem relative to --out, e.g. "x/y/name"
    size: tuple[int, int] | None = None  # (height, width), upright
    error: str | None = None


# ---------------------------------------------------------------------------- inputs


def _rel_of_file(path: str) -> str:
    """A file given directly keeps its relative path, unless that leaves its folder."""
    norm = os.path.normpath(path)
    if os.path.isabs(norm) or norm.split(os.sep)[0] == "..":
        norm = os.path.basename(norm)
    return os.path.splitext(norm)[0]


def collect_inputs(args: list[str]) -> list[Input]:
    """Inputs from file, directory and glob arguments; an argument that names nothing, or
    two inputs that would write the same files, raise ConfigError."""
    found: list[Input] = []
    for arg in args:
        if os.path.isdir(arg):
            for dirpath, dirnames, filenames in os.walk(arg):
                dirnames.sort()
                for name in sorted(filenames):
                    if name.startswith(".") or not name.lower().endswith(image_io.EXTENSIONS):
                        continue
                    path = os.path.join(dirpath, name)
                    found.append(Input(path, os.path.splitext(os.path.relpath(path, arg))[0]))
        elif os.path.isfile(arg):
            found.append(Input(arg, _rel_of_file(arg)))
        elif glob.has_magic(arg):
            matches = sorted(p for p in glob.glob(arg, recursive=True) if os.path.isfile(p))
            if not matches:
                raise configs.ConfigError(f"{arg}: the pattern matches no file")
            found += [Input(p, _rel_of_file(p)) for p in matches]
        else:
            raise configs.ConfigError(f"{arg}: no such file or directory")
    if not found:
        raise configs.ConfigError(f"no image files in {' '.join(args)}")
    seen: dict[str, str] = {}
    for item in found:
        if item.rel in seen:
            raise configs.ConfigError(
                f"{seen[item.rel]} and {item.path} would both write {item.rel}.png; "
                "predict them into different --out directories"
            )
        seen[item.rel] = item.path
    return found


def output_files(out: str, rel: str, probs: bool) -> list[str]:
    base = os.path.join(out, rel)
    files = [base + ".png", base + "_overlay.jpg"]
    return files + ([base + "_probs.npz"] if probs else [])


def canvases(sizes: list[tuple[int, int]], max_shapes: int) -> dict:
    """{size: canvas}: each distinct size its own canvas while there are at most max_shapes
    of them; beyond, sides rounded up to multiples of 32, 64, 128, ... until few enough."""
    distinct = sorted(set(sizes))
    step = 1
    while True:
        mapping = {s: tuple(-(-side // step) * step for side in s) for s in distinct}
        if len(set(mapping.values())) <= max_shapes:
            return mapping
        step = 32 if step == 1 else step * 2


# ---------------------------------------------------------------------------- outputs


def _atomic(path: str, write) -> None:
    """write(tmp_path), then rename over path: a crash never leaves a half-written file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    stem, ext = os.path.splitext(path)
    tmp = f"{stem}.tmp{os.getpid()}{ext}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_outputs(
    files, image, labels, probs, palette, class_names, opacity: float
) -> dict[str, int]:
    """Writes the mask, overlay (and probabilities); returns the class histogram."""
    _atomic(files[0], lambda p: visualize.label_image(labels, palette).save(p, format="PNG"))
    overlay = visualize.overlay(image, labels, palette, opacity)
    _atomic(files[1], lambda p: Image.fromarray(overlay).save(p, "JPEG", quality=90))
    if probs is not None:
        _atomic(
            files[2],
            lambda p: np.savez_compressed(
                p, probs=probs.astype(np.float16), class_names=np.asarray(class_names)
            ),
        )
    counts = np.bincount(labels.ravel(), minlength=len(class_names))
    return {name: int(c) for name, c in zip(class_names, counts, strict=False) if c}


def predict_files(
    segmenter,
    inputs: list[Input],
    out: str,
    *,
    opacity: float = 0.5,
    probs: bool = False,
    overwrite: bool = False,
    batch_size: int = 1,
    max_shapes: int = 8,
    max_pixels: int = 89_478_485,
    progress: bool = True,
) -> dict:
    """Predicts every input into out (see the module doc); returns a summary with counts,
    seconds and images/s. Per-file errors are recorded, never raised."""
    os.makedirs(out, exist_ok=True)
    records, todo = _triage(inputs, out, probs=probs, overwrite=overwrite, max_pixels=max_pixels)
    shapes = canvases([i.size for i in todo], max_shapes)
    groups: dict[tuple, list[Input]] = {}
    for item in todo:
        groups.setdefault(shapes[item.size], []).append(item)

    bar = writer.Bar(total=len(todo), unit="image", disable=not progress, file=sys.stderr)
    start, done = time.perf_counter(), 0
    write = functools.partial(_write_result, segmenter, out, probs=probs, opacity=opacity)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for canvas, items in sorted(groups.items()):
            for first in range(0, len(items), batch_size):
                batch = items[first : first + batch_size]
                t0 = time.perf_counter()
                decoded = list(pool.map(lambda i: _decode(i, max_pixels), batch))
                ok = [(i, im) for i, im in zip(batch, decoded, strict=True) if im is not None]
                for item in batch:
                    if item.error:
                        records[item.path] = {"input": item.path, "error": item.error}
                if ok:
                    output = "probs" if probs else "labels"
                    results = segmenter.run(
                        [im for _, im in ok], output, canvas=canvas, batch=batch_size
                    )
                    share = (time.perf_counter() - t0) / len(ok)
                    for (item, image), result in zip(ok, results, strict=True):
                        records[item.path] = write(item, image, result, share)
                        done += 1
                bar.update(len(batch))
    bar.close()
    seconds = time.perf_counter() - start
    lines = "".join(json.dumps(records[i.path]) + "\n" for i in inputs)
    _atomic(os.path.join(out, JSONL), lambda p: _write_text(p, lines))
    errors = [records[i.path] for i in inputs if "error" in records[i.path]]
    return {
        "predicted": done,
        "skipped": sum("skipped" in r for r in records.values()),
        "errors": errors,
        "seconds": seconds,
        "images_per_s": done / seconds if seconds > 0 else math.nan,
    }


def _triage(
    inputs: list[Input], out: str, *, probs: bool, overwrite: bool, max_pixels: int
) -> tuple[dict[str, dict], list[Input]]:
    """({path: record} of the inputs skipped or refused, the inputs to predict, their
    .size set from the header). Without overwrite an input whose outputs exist is skipped,
    keeping what the run that wrote them recorded."""
    previous = _previous_records(os.path.join(out, JSONL))
    records: dict[str, dict] = {}
    todo = []
    for item in inputs:
        if not overwrite and all(os.path.exists(f) for f in output_files(out, item.rel, probs)):
            records[item.path] = previous.get(item.path, {"input": item.path}) | {
                "skipped": "outputs exist"
            }
            continue
        try:  # the header only: format, pixel limit, size as shown
            with Image.open(item.path, formats=image_io.FORMATS) as img:
                width, height = image_io.shown_size(img)
            if width * height > max_pixels:
                raise image_io.ImageError(
                    f"{item.path} has {width}x{height} = {width * height} pixels, above "
                    f"max_pixels={max_pixels}"
                )
            item.size = (height, width)
            todo.append(item)
        except Exception as e:  # every refusal is the file's, recorded and reported
            item.error = _error_text(item.path, e)
            records[item.path] = {"input": item.path, "error": item.error}
    return records, todo


def _write_result(
    segmenter, out: str, item: Input, image, result, share: float, *, probs: bool, opacity: float
) -> dict:
    """Writes one input's outputs from the segmenter's result on its canvas (labels i32 or
    probs f32[...,K]); returns its record. share: its part of the batch's decode and run."""
    t1 = time.perf_counter()
    h, w = item.size
    result = result[:h, :w]
    labels = result.argmax(-1) if probs else result
    histogram = write_outputs(
        output_files(out, item.rel, probs),
        image,
        labels,
        result if probs else None,
        segmenter.palette,
        segmenter.class_names,
        opacity,
    )
    return {
        "input": item.path,
        "mask": item.rel + ".png",
        "height": h,
        "width": w,
        "seconds": round(share + time.perf_counter() - t1, 4),
        "histogram": histogram,
    }


def _previous_records(path: str) -> dict[str, dict]:
    """{input: record} of an earlier predictions.jsonl (unreadable lines are dropped)."""
    records = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                    records[record["input"]] = record
                except (ValueError, KeyError, TypeError):
                    continue
    return records


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _error_text(path: str, e: Exception) -> str:
    text = str(e)
    return text if path in text else f"{path}: {type(e).__name__}: {text}"


def _decode(item: Input, max_pixels: int) -> np.ndarray | None:
    try:
        image = image_io.read_rgb(item.path, max_pixels)
    except Exception as e:  # recorded: the other files are still predicted
        item.error = _error_text(item.path, e)
        return None
    if image.shape[:2] != item.size:  # the file changed between the scan and now
        item.error = f"{item.path}: size changed while predicting"
        return None
    return image


# ----------------------------------------------------------------------------- command line


def _flags(argv) -> flags.FlagValues:
    fv = flags.FlagValues()
    define = dict(flag_values=fv)
    flags.DEFINE_string("workdir", None, "a jaxseg.train run directory", **define)
    flags.DEFINE_string(
        "exported", None, "a jaxseg.export directory instead of --workdir", **define
    )
    flags.DEFINE_string("out", None, "output directory", **define)
    flags.DEFINE_string("checkpoint", "latest", "latest, best (by val/miou) or a step", **define)
    flags.DEFINE_integer(
        "seed_index", None, "replica of a --config.seeds>1 run (default: best val mIoU)", **define
    )
    flags.DEFINE_float("opacity", 0.5, "overlay: weight of the class colours", 0.0, 1.0, **define)
    flags.DEFINE_bool("probs", False, "also write float16 softmax probabilities (.npz)", **define)
    flags.DEFINE_bool("overwrite", False, "predict inputs whose outputs exist again", **define)
    flags.DEFINE_integer(
        "batch_size",
        0,
        "images per batch (0: the run's eval.batch_size; slide mode 1)",
        0,
        **define,
    )
    flags.DEFINE_integer("max_shapes", 8, "most canvas shapes to compile", 1, **define)
    flags.DEFINE_integer(
        "max_pixels",
        0,
        "refuse larger images (0: the run's data.max_pixels, or Pillow's limit)",
        0,
        **define,
    )
    flags.mark_flag_as_required("out", flag_values=fv)
    return fv


def main(argv=None) -> dict:
    """The command line: argv without the program name (default sys.argv[1:])."""
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = "jaxseg.predict"
    fv = _flags(argv)
    rest = cli.parse_flags(
        fv, argv, prog=prog, doc=__doc__, config_from="workdir", allowed=ALLOWED, positional=True
    )
    sharding.initialize_distributed()
    from jaxseg.segmenter import Segmenter  # after the flags: --help needs no jax

    try:
        if bool(fv.workdir) == bool(fv.exported):
            raise configs.ConfigError("give one of --workdir DIR or --exported DIR")
        if not rest:
            raise configs.ConfigError("name the images: files, directories or globs")
        overrides = cli.overrides(fv, argv, ALLOWED)
        if fv.exported:
            if overrides or fv.checkpoint != "latest":
                raise configs.ConfigError(
                    "--config.eval.* and --checkpoint do not apply to --exported: the export "
                    "fixed them; export again with other settings"
                )
            segmenter = Segmenter.from_export(fv.exported)
            batch_size, max_pixels = 1, fv.max_pixels or MAX_PIXELS
        else:
            segmenter = Segmenter.from_workdir(
                fv.workdir, checkpoint=fv.checkpoint, overrides=overrides, seed_index=fv.seed_index
            )
            # Slide mode batches windows (eval.window_batch), so one image at a time suffices.
            slide = segmenter.settings.mode == "slide"
            batch_size = fv.batch_size or (1 if slide else segmenter.config.eval.batch_size)
            max_pixels = fv.max_pixels or segmenter.config.data.get("max_pixels", MAX_PIXELS)
            if segmenter.config.eval.shorter_side:
                print(
                    f"{prog}: note: this run evaluates images resized to a shorter side of "
                    f"{segmenter.config.eval.shorter_side}; predict works at each image's own "
                    "size, so resize inputs of another scale first",
                    file=sys.stderr,
                )
        inputs = collect_inputs(rest)
    except (configs.ConfigError, FileNotFoundError, ValueError) as e:
        cli.fail(prog, str(e))
    summary = predict_files(
        segmenter,
        inputs,
        fv.out,
        opacity=fv.opacity,
        probs=fv.probs,
        overwrite=fv.overwrite,
        batch_size=batch_size,
        max_shapes=fv.max_shapes,
        max_pixels=max_pixels,
    )
    for error in summary["errors"]:
        print(f"{prog}: {error['error']}", file=sys.stderr)
    print(
        f"predicted {summary['predicted']} images ({summary['skipped']} skipped, "
        f"{len(summary['errors'])} failed) in {summary['seconds']:.1f} s: "
        f"{summary['images_per_s']:.2f} images/s; see {os.path.join(fv.out, JSONL)}"
    )
    if summary["errors"]:
        sys.exit(1)
    return summary


if __name__ == "__main__":
    cli.run(main)
