"""Pack a configured dataset's splits into array_record shards that a pod streams from a bucket.

    python -m jaxseg.pack --config experiments/unet_membrane.py --out /data/membrane_packed
    python -m jaxseg.pack --config experiments/unet.py --config.data.name=folder \\
        --config.data.root=/data/mine --config.data.class_names="('bg', 'car')" \\
        --out gs://bucket/mine_packed
    python -m jaxseg.train --config experiments/unet_membrane.py \\
        --config.data.name=packed --config.data.root=/data/membrane_packed

Takes the config and --config.* overrides train takes, builds the train, val and (where the
dataset has one) test splits as train would, and writes each as shards of --shard_size
examples plus packed.json (class names, palette, the source's data section, counts, date
and versions). Training on the packed copy gives the same batches, bit for bit, as
training on the source (jaxseg.data.packed). packed.json is written last, so a cut-off
pack is never read as a finished one.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import os
import shutil
import sys
import tempfile

from absl import flags
from etils import epath

from jaxseg import cli, configs, provenance, recipe, writer
from jaxseg import workdir as run_files
from jaxseg.data import images as image_io
from jaxseg.data import packed
from jaxseg.data.table import SPLITS

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 89_478_485  # the folder readers' default pixel cap
# array_record's options: one record per group (random access reads one record, as grain
# needs), no compression (image files are compressed already; zstd would cost every read).
WRITER_OPTIONS = "group_size:1,uncompressed"
COPY_CHUNK = 16 << 20  # bytes per write when a shard is copied into a bucket


def record(source, index: int, max_pixels: int) -> tuple[bytes, bool]:
    """(the record of source[index], whether it holds the image file's bytes as stored).
    The stored bytes are kept only if they decode to the source's example exactly."""
    example = source[index]
    where = f"{source!r}[{index}]"
    image_file = getattr(source, "image_file", None)
    if image_file is not None and "image" in example:
        with open(image_file(index), "rb") as f:
            stored = packed.encode_example(example, {"image": f.read()})
        try:
            back = packed.decode_example(stored, where, max_pixels)
        except (ValueError, OSError):  # the source reads it otherwise (ImageError: ValueError)
            back = None
        if back is not None and packed.same_example(example, back):
            return stored, True
    lossless = packed.encode_example(example, {})
    if not packed.same_example(example, packed.decode_example(lossless, where, max_pixels)):
        raise ValueError(f"{where}: example does not survive packing unchanged")
    return lossless, False


def write_split(
    source,
    out: epath.Path,
    split: str,
    *,
    shard_size: int,
    threads: int,
    max_pixels: int,
    progress: bool = True,
) -> dict:
    """Writes source's examples in order as out/<split>-XXXXX-of-YYYYY.array_record;
    returns the split's packed.json entry {"count", "shards": [{"file", "count"}],
    "stored", "encoded"}. Examples are read and encoded by `threads` threads."""
    from array_record.python.array_record_module import ArrayRecordWriter

    count = len(source)
    num_shards = max(1, math.ceil(count / shard_size))
    shards, stored = [], 0
    bar = writer.Bar(
        total=count,
        desc=f"pack {split}",
        unit="image",
        mininterval=1.0 if sys.stderr.isatty() else 10.0,  # as the training bar
        disable=not progress,
        file=sys.stderr,
    )
    remote = run_files.is_remote(str(out))
    with (
        bar,  # closed before an error is reported, so the error is the last line
        concurrent.futures.ThreadPoolExecutor(threads) as pool,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for shard in range(num_shards):
            name = f"{split}-{shard:05d}-of-{num_shards:05d}.array_record"
            # array_record writes local files only: a bucket gets a local file, copied.
            local = os.path.join(tmp, name) if remote else str(out / name)
            indices = range(shard * shard_size, min(count, (shard + 1) * shard_size))
            file = ArrayRecordWriter(local, WRITER_OPTIONS)
            try:
                # pool.map keeps the order; records are encoded ahead of the writer.
                for data, as_stored in pool.map(lambda i: record(source, i, max_pixels), indices):
                    file.write(data)
                    stored += as_stored
                    bar.update(1)
            finally:
                file.close()
            if remote:
                with open(local, "rb") as src, (out / name).open("wb") as dst:
                    shutil.copyfileobj(src, dst, COPY_CHUNK)
                os.remove(local)
            shards.append({"file": name, "count": len(indices)})
    return {"count": count, "shards": shards, "stored": stored, "encoded": count - stored}


def sources(config) -> dict:
    """{split: source} of config's dataset: train and val, and test where it has one."""
    found = {}
    for split in SPLITS:
        try:
            found[split] = recipe.make_source(config, split)
        except configs.ConfigError as e:
            if split != "test":
                raise
            log.info("no test split packed: %s", e)
    return found


def pack(
    config, out: str, *, shard_size: int = 1024, threads: int = 0, progress: bool = True
) -> dict:
    """Packs config.data's splits into `out` (a folder or gs:// URL); returns packed.json's
    content. Any packed.json already there is removed first."""
    if shard_size < 1:
        raise configs.ConfigError(f"--shard_size={shard_size} must be at least 1")
    splits = sources(config)
    first = splits["train"]
    palette = getattr(first, "palette", None)
    root = run_files.path(out)
    root.mkdir(parents=True, exist_ok=True)
    (root / packed.METADATA).unlink(missing_ok=True)
    max_pixels = max(int(getattr(s, "max_pixels", DEFAULT_MAX_PIXELS)) for s in splits.values())
    threads = threads or os.cpu_count() or 1
    meta = {
        "format": packed.FORMAT,
        "version": packed.VERSION,
        "class_names": list(first.class_names),
        "palette": [list(map(int, c)) for c in palette] if palette else None,
        "max_pixels": max_pixels,
        "source": {
            "data": json.loads(configs.to_json(config))["data"],
            "seed": config.seed,
            "eval_size": list(config.eval.size),
        },
        "splits": {},
        **provenance.stamp(),
    }
    for split, source in splits.items():
        meta["splits"][split] = write_split(
            source,
            root,
            split,
            shard_size=shard_size,
            threads=threads,
            max_pixels=max_pixels,
            progress=progress,
        )
    run_files.write_text_atomic(root / packed.METADATA, json.dumps(meta, indent=2))
    return meta


def _flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string(
        "out", None, "folder or gs:// URL to write the packed dataset to", flag_values=fv
    )
    flags.DEFINE_integer("shard_size", 1024, "examples per array_record shard", flag_values=fv)
    flags.DEFINE_integer(
        "threads", 0, "threads reading and encoding (0: one per core)", flag_values=fv
    )
    return fv


def main(argv=None) -> dict:
    """The command line: argv without the program name (default sys.argv[1:])."""
    argv = sys.argv[1:] if argv is None else list(argv)
    fv = _flags()
    cli.parse_flags(fv, argv, prog="jaxseg.pack", doc=__doc__)
    if not fv.out:
        cli.fail("jaxseg.pack", "--out DIR is required (a folder or gs:// URL)")
    try:
        meta = pack(fv.config, fv.out, shard_size=fv.shard_size, threads=fv.threads)
    except (configs.ConfigError, image_io.ImageError) as e:  # the files are named: one line
        cli.fail("jaxseg.pack", str(e))
    for split, info in meta["splits"].items():
        print(
            f"{split}: {info['count']} examples in {len(info['shards'])} shard(s) "
            f"({info['stored']} image files as stored, {info['encoded']} encoded as PNG/npy)"
        )
    print(f"wrote {run_files.path(fv.out, packed.METADATA)}")
    return meta


if __name__ == "__main__":
    cli.run(main)
