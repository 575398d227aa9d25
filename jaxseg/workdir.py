"""What a run's workdir holds, and reading it back without the dataset, and without
executing any Python from it:

    config.json      the resolved config (jaxseg.configs.to_json; read by from_json)
    plugins.json     the plug-in modules (not jaxseg's) whose model, dataset or loss the run
                     used: read_config imports them again before it reads config.json
    dataset.json     what labels the output: class names, palette, ignore index, mean/std
    metrics.jsonl    one JSON object per line ("step", "train/loss", "val/miou", ...)
    checkpoints/     orbax steps (jaxseg.checkpoint)
    eval/            jaxseg.evaluate's reports
    lock.json        the host, pid and start of the run training here (while it runs)
    config_changes.jsonl  settings changed on resume with --allow_config_change

A workdir may be a local folder or an object-store URL (gs://bucket/run): every file in it
goes through etils' epath (`path`), never os.path or a bare open.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import socket
import sys

import ml_collections
from etils import epath

from jaxseg import configs, registry
from jaxseg.data import DATASETS
from jaxseg.losses import LOSSES
from jaxseg.models import MODELS
from jaxseg.visualize import default_palette

CONFIG = "config.json"
DATASET = "dataset.json"
PLUGINS = "plugins.json"


def is_remote(location) -> bool:
    """Whether a path is an object-store URL (gs://, s3://) rather than a local folder."""
    return "://" in str(location)


def path(location, *names: str) -> epath.Path:
    """epath.Path of location/names: local paths made absolute, URLs kept as they are."""
    base = epath.Path(location)
    if not is_remote(location):
        base = base.resolve()
    return base.joinpath(*names)


def write_text_atomic(target: epath.Path, text: str) -> None:
    """Writes, then renames over target: locally a crash never leaves a half-written file
    (on object stores the rename is a copy, each object still written whole)."""
    tmp = target.parent / f"{target.name}.tmp{os.getpid()}"
    tmp.write_text(text)
    tmp.replace(target)


def plugins(config: ml_collections.ConfigDict) -> list[dict]:
    """[{"module", "path"}] of the plug-in modules defining config's model, dataset and loss
    terms (jaxseg.registry.plugin), without repeats."""
    parts = [
        registry.lookup(MODELS, "model", config.model.name),
        registry.lookup(DATASETS, "dataset", config.data.name),
        *(registry.lookup(LOSSES, "loss", name) for name, _ in config.loss.terms),
    ]
    found = [registry.plugin(p) for p in parts]
    return [p for i, p in enumerate(found) if p and p not in found[:i]]


def import_plugins(workdir: str) -> None:
    """Imports the plug-in modules plugins.json names (their folders put on sys.path), so
    their parts are registered before the run's config is read."""
    file = path(workdir, PLUGINS)
    if not file.exists():
        return
    try:
        listed = json.loads(file.read_text())
        entries = [(str(p["module"]), str(p["path"])) for p in listed]
    except (KeyError, TypeError, ValueError) as e:
        raise configs.ConfigError(f"{file} is damaged: {type(e).__name__}: {e}") from None
    for module, folder in entries:
        if folder and folder not in sys.path:
            sys.path.append(folder)
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise configs.ConfigError(
                f"{file}: the run used plug-in module {module!r} from {folder!r}, which does "
                f"not import here: {e}"
            ) from None


def write(workdir: str, config: ml_collections.ConfigDict, source) -> None:
    """Writes config.json, dataset.json (class names and palette of the training source) and
    plugins.json, each atomically: a crash leaves the old file."""
    path(workdir).mkdir(parents=True, exist_ok=True)
    class_names = tuple(source.class_names)
    palette = getattr(source, "palette", None) or default_palette(len(class_names))
    palette = tuple(tuple(int(v) for v in c) for c in palette)
    dataset = {
        "class_names": list(class_names),
        "palette": [list(c) for c in palette],
        "ignore_index": config.data.ignore_index,
        "mean": list(config.data.mean),
        "std": list(config.data.std),
    }
    write_text_atomic(path(workdir, PLUGINS), json.dumps(plugins(config), indent=2))
    write_text_atomic(path(workdir, CONFIG), configs.to_json(config))
    write_text_atomic(path(workdir, DATASET), json.dumps(dataset, indent=2))


def has_config(workdir: str) -> bool:
    return path(workdir, CONFIG).exists()


def _read(workdir: str, name: str) -> str:
    file = path(workdir, name)
    if not file.exists():
        what = "not a directory" if not path(workdir).is_dir() else f"has no {name}"
        raise FileNotFoundError(f"{workdir} {what}: is it a jaxseg.train workdir?")
    return file.read_text()


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The run's resolved config (locked; tuples restored), its plug-ins imported first."""
    import_plugins(workdir)
    return configs.from_json(_read(workdir, CONFIG), str(path(workdir, CONFIG)))


def read_dataset(workdir: str) -> dict:
    """{"class_names": tuple, "palette": tuple of (r, g, b), "ignore_index", "mean", "std"}."""
    where = path(workdir, DATASET)
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


# ------------------------------------------------------------------------------ run lock

LOCK = "lock.json"


def _process_start(pid: int) -> str | None:
    """The kernel's start time of pid (Linux /proc), to tell a reused pid from the holder."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the process that wrote a lock on this host still runs."""
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    started = holder.get("process_start")
    return started is None or _process_start(pid) in (None, started)


class RunLock:
    """<workdir>/lock.json while a run trains there: a second run in the same workdir is
    refused with one line naming the holder; a lock whose process is gone (killed, on this
    host) is stale and taken over. Release with release() (train does, in `finally`).

    Locally the lock is created exclusively (O_EXCL); object stores offer no exclusive
    create through epath, so there a second run that starts within moments of the first
    can slip past (a later one is refused)."""

    def __init__(self, workdir: str):
        self.path = path(workdir, LOCK)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        for _ in range(2):  # a stale lock is removed once, then taken
            try:
                self._create(json.dumps(me))
            except FileExistsError:
                holder = self._holder()
                if holder.get("host") == me["host"] and not _alive(holder):
                    self.path.unlink()
                    continue
                raise configs.ConfigError(
                    f"{workdir} is in use by the run of pid {holder.get('pid')} on "
                    f"{holder.get('host')}, started {holder.get('started')}; wait for it, "
                    f"use another --workdir, or delete {self.path} if that run is gone"
                ) from None
            self.holder = me
            return
        raise configs.ConfigError(f"could not take the lock {self.path}")

    def _create(self, text: str) -> None:
        """Creates the lock file holding text; FileExistsError when it exists."""
        if is_remote(self.path):
            if self.path.exists():
                raise FileExistsError(str(self.path))
            self.path.write_text(text)
            return
        fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # being written or damaged: treated as another host's

    def release(self) -> None:
        if self._holder().get("pid") == self.holder["pid"]:
            self.path.unlink()


# ------------------------------------------------------------------ a changed config

# Fields that change what a resumed run trains are everything but these.
FREE_TO_CHANGE = (
    "eval",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "loader.read_threads",
    "loader.prefetch",
)
CHANGES = "config_changes.jsonl"


def training_changes(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict):
    """{key: (saved, new)} of the fields outside FREE_TO_CHANGE that differ."""
    old, new = configs.flat_items(saved), configs.flat_items(config)
    return {
        k: (old.get(k), new[k])
        for k in new
        if old.get(k) != new[k]
        and k not in FREE_TO_CHANGE
        and k.split(".")[0] not in FREE_TO_CHANGE
    }


def check_resume_config(
    workdir: str, config: ml_collections.ConfigDict, step: int, allow: bool
) -> dict:
    """Refuses (ConfigError listing the differences) to resume `step` of workdir with a
    config that trains something else, unless `allow`; then the change is appended to
    config_changes.jsonl. Returns the changes."""
    changes = training_changes(read_config(workdir), config)
    if changes and not allow:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
        raise configs.ConfigError(
            f"{workdir} holds a run at step {step} trained with other settings ({listed}); "
            "use a new --workdir, or pass --allow_config_change to resume with these"
        )
    if changes:  # object stores cannot append: read, add a line, write
        record = path(workdir, CHANGES)
        earlier = record.read_text() if record.exists() else ""
        line = json.dumps({"step": step, "changes": changes}) + "\n"
        write_text_atomic(record, earlier + line)
    return changes
