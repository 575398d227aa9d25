"""A packed dataset: any source's splits as array_record shards plus packed.json, written by
`python -m jaxseg.pack` and read here with grain, from a local folder or a bucket:

    python -m jaxseg.pack --config experiments/unet_membrane.py --out /data/membrane_packed
    python -m jaxseg.train --config experiments/unet_membrane.py \\
        --config.data.name=packed --config.data.root=gs://bucket/membrane_packed

    DIR/packed.json                        class names, palette, the source, counts, shards
    DIR/train-00000-of-00002.array_record  one record per example, in the source's order
    DIR/val-00000-of-00001.array_record

Example i of a packed split equals example i of the source it was packed from, bit for
bit (values, dtype, shape, and the one-channel greyscale views of images.as_rgb), so the
training batches are the same for the same seed and augmentation. A record holds an
image file's bytes as stored (decoded here as jaxseg.data.images decodes files) and, for
what a source computes (masks after a label mapping, synthetic images), a lossless PNG
(or .npy for what PNG cannot hold). The writer decodes every record it writes and keeps
the stored bytes only where that gives the source's example exactly.

Records are msgpack maps (not pickle: a bucket's bytes must not be able to run code).
"""

from __future__ import annotations

import io
import json
import operator

import grain
import msgpack
import numpy as np
from etils import epath
from PIL import Image

from jaxseg.data import images as image_io
from jaxseg.data.table import register

METADATA = "packed.json"
FORMAT = "jaxseg packed dataset"
VERSION = 1


# ------------------------------------------------------------------------- one example


def decode_stored(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """u8[H,W,3] of an image file's bytes, upright, decoded as the folder reads the file
    (jaxseg.data.images.decode_rgb_upright). The writer checks each record against the
    source, so a source that decodes otherwise gets lossless records instead of wrong ones."""
    return image_io.decode_rgb_upright(data, name, max_pixels)[0]


def encode_array(a: np.ndarray) -> dict:
    """A lossless record entry of a: PNG for u8 [H,W], [H,W,1|3|4] and integer [H,W] within
    16 bits (one channel for images.as_rgb's greyscale views), else .npy bytes."""
    shape, dtype = list(a.shape), a.dtype.str
    grey = image_io.is_grey(a)
    plane = a[..., 0] if grey or (a.ndim == 3 and a.shape[-1] == 1) else a
    if plane.dtype.kind in "ui" and plane.ndim == 2 and plane.size:
        low, high = int(plane.min()), int(plane.max())
        if low >= 0 and high <= 65535:
            plane = plane.astype(np.uint8 if high <= 255 else np.uint16)
    if (plane.ndim == 2 and plane.dtype in (np.uint8, np.uint16)) or (
        plane.dtype == np.uint8 and plane.ndim == 3 and plane.shape[-1] in (3, 4)
    ):
        out = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(plane)).save(out, "PNG", compress_level=1)
        return {
            "codec": "png",
            "data": out.getvalue(),
            "shape": shape,
            "dtype": dtype,
            "grey": grey,
        }
    out = io.BytesIO()
    np.save(out, a, allow_pickle=False)
    return {"codec": "npy", "data": out.getvalue()}


def decode_array(entry: dict, name: str, max_pixels: int) -> np.ndarray:
    """The array of a record entry (encode_array's, or stored file bytes)."""
    codec = entry["codec"]
    if codec == "stored":
        return decode_stored(entry["data"], name, max_pixels)
    if codec == "npy":
        return np.load(io.BytesIO(entry["data"]), allow_pickle=False)
    if codec != "png":
        raise ValueError(f"{name}: unknown record codec {codec!r} (written by a newer jaxseg?)")
    img = image_io.open_image(io.BytesIO(entry["data"]), max_pixels, ("PNG",), name=name)
    plane = np.asarray(img).astype(np.dtype(entry["dtype"]), copy=False)
    if entry["grey"]:
        return image_io.as_rgb(plane)
    return plane.reshape(entry["shape"])


def encode_example(example: dict, stored: dict[str, bytes]) -> bytes:
    """One record: every array of example losslessly, but those in `stored` (key -> file
    bytes) as the bytes; str, int, float and bool values as they are."""
    arrays, values = {}, {}
    for key, value in example.items():
        if key in stored:
            arrays[key] = {"codec": "stored", "data": stored[key]}
        elif isinstance(value, np.ndarray | np.generic):  # a numpy scalar as a 0-d array
            arrays[key] = encode_array(np.asarray(value)) | {
                "scalar": isinstance(value, np.generic)
            }
        elif isinstance(value, str | bool | int | float):
            values[key] = value
        else:
            raise TypeError(f"cannot pack {key!r} of type {type(value).__name__}")
    return msgpack.packb({"arrays": arrays, "values": values}, use_bin_type=True)


def decode_example(record: bytes, where: str, max_pixels: int) -> dict:
    """The example of one record; errors name `where` (or the example's own name)."""
    fields = msgpack.unpackb(record, raw=False)
    example = dict(fields["values"])
    name = str(example.get("name", where))
    for key, entry in fields["arrays"].items():
        value = decode_array(entry, name, max_pixels)
        example[key] = value[()] if entry.get("scalar") else value
    return example


def same_example(a: dict, b: dict) -> bool:
    """Whether two examples are equal bit for bit: keys, values, dtypes, shapes, and which
    images are images.as_rgb's one-channel views (the transforms treat those as one)."""
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if isinstance(x, np.ndarray):
            if not isinstance(y, np.ndarray) or x.dtype != y.dtype or x.shape != y.shape:
                return False
            if image_io.is_grey(x) != image_io.is_grey(y) or not np.array_equal(x, y):
                return False
        elif type(x) is not type(y) or x != y:
            return False
    return True


# -------------------------------------------------------------------------- the source


def read_metadata(root: str) -> dict:
    """packed.json of root (a folder or a gs:// URL); ValueError naming the path when there
    is none or it is not a packed dataset's."""
    if not root:
        raise ValueError("data.root is empty: set --config.data.root=DIR (made by jaxseg.pack)")
    path = epath.Path(root) / METADATA
    if not path.exists():
        why = "does not exist" if not epath.Path(root).exists() else f"has no {METADATA}"
        raise FileNotFoundError(f"{root} {why}: not a packed dataset (write one: jaxseg.pack)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not the metadata of a packed dataset ({FORMAT!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path} has version {meta.get('version')}; this jaxseg reads {VERSION}")
    return meta


def shard_location(path: epath.Path) -> str:
    """The path array_record opens: a local path, or a gs:// URL that its own GCS reader
    fetches (array_record 0.8.6 reads buckets itself, not through epath)."""
    return str(path)


class PackedSource:
    """Split `split` of the packed dataset at root: example i is {"image": u8[H,W,3],
    "mask": u8|i32[H,W], "name": str}, as the source it was packed from gave it."""

    def __init__(self, root: str, split: str):
        meta = read_metadata(root)
        if split not in meta["splits"]:
            raise ValueError(f"{root} has no {split!r} split; it has {', '.join(meta['splits'])}")
        info = meta["splits"][split]
        self.root, self.split = root, split
        self.class_names = tuple(meta["class_names"])
        self.palette = tuple(tuple(c) for c in meta["palette"]) if meta["palette"] else None
        self.max_pixels = int(meta["max_pixels"])
        self._length = int(info["count"])
        shards = [epath.Path(root) / s["file"] for s in info["shards"]]
        missing = [str(p) for p in shards if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"{missing[0]} is missing ({len(missing)} of the {len(shards)} {split} shards are)"
            )
        # "file[start:end]" tells grain the counts, so no shard is opened before it is read.
        paths = [
            f"{shard_location(path)}[0:{s['count']}]"
            for path, s in zip(shards, info["shards"], strict=True)
        ]
        self._records = grain.sources.ArrayRecordDataSource(paths)
        if len(self._records) != self._length:
            raise ValueError(f"{root}: {split} shards hold {len(self._records)} of {self._length}")

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict:
        index = operator.index(index)  # accepts numpy integers, as grain passes them
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self!r}")
        where = f"{self.root}[{self.split}][{index}]"
        return decode_example(self._records[index], where, self.max_pixels)

    def __repr__(self) -> str:
        return f"PackedSource(root={self.root!r}, split={self.split!r}, len={self._length})"


@register("packed")
def build(split: str, *, root: str = ""):
    """root: the folder or gs:// URL jaxseg.pack wrote (packed.json and the shards)."""
    return PackedSource(root, split)
