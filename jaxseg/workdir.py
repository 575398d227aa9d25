"""What a run's workdir holds, and reading it back without the dataset, and without
executing any Python from it:

    config.json      the resolved config (jaxseg.configs.to_json; read by from_json)
    dataset.json     what labels the output: class names, palette, ignore index, mean/std
    metrics.jsonl    one JSON object per line ("step", "train/loss", "val/miou", ...)
    checkpoints/     orbax steps (jaxseg.checkpoint)
    eval/            jaxseg.evaluate's reports
"""

from __future__ import annotations

import json
import os

import ml_collections

from jaxseg import configs
from jaxseg.visualize import default_palette

CONFIG = "config.json"
DATASET = "dataset.json"


def write(workdir: str, config: ml_collections.ConfigDict, class_names) -> None:
    """Writes config.json and dataset.json (each atomically: a crash leaves the old file)."""
    os.makedirs(workdir, exist_ok=True)
    palette = tuple(tuple(c) for c in config.data.palette) or default_palette(len(class_names))
    dataset = {
        "class_names": list(class_names),
        "palette": [list(c) for c in palette],
        "ignore_index": config.data.ignore_index,
        "mean": list(config.data.mean),
        "std": list(config.data.std),
    }
    _write_atomic(os.path.join(workdir, CONFIG), configs.to_json(config))
    _write_atomic(os.path.join(workdir, DATASET), json.dumps(dataset, indent=2))


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _read(workdir: str, name: str) -> str:
    path = os.path.join(workdir, name)
    if not os.path.isfile(path):
        what = "not a directory" if not os.path.isdir(workdir) else f"has no {name}"
        raise FileNotFoundError(f"{workdir} {what}: is it a jaxseg.train workdir?")
    with open(path) as f:
        return f.read()


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The run's resolved config (locked; tuples restored)."""
    return configs.from_json(_read(workdir, CONFIG), os.path.join(workdir, CONFIG))


def read_dataset(workdir: str) -> dict:
    """{"class_names": tuple, "palette": tuple of (r, g, b), "ignore_index", "mean", "std"}."""
    where = os.path.join(workdir, DATASET)
    try:
        d = json.loads(_read(workdir, DATASET))
        return {
            "class_names": tuple(str(n) for n in d["class_names"]),
            "palette": tuple(tuple(int(v) for v in c) for c in d["palette"]),
            "ignore_index": int(d["ignore_index"]),
            "mean": tuple(float(v) for v in d["mean"]),
            "std": tuple(float(v) for v in d["std"]),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise configs.ConfigError(f"{where} is damaged: {type(e).__name__}: {e}") from None
