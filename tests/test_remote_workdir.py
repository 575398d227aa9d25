"""A workdir on an object store (gs://): every file of the workdir goes through etils' epath.

epath's own test double routes gs://bucket/... to a local folder, so the code under test
sees remote paths (no os.path, no bare open would reach them) while the bytes land here.
"""

import json
import os
import types

import numpy as np
import pytest
from etils import epath
from etils.epath import testing as epath_testing

from jaxseg import checkpoint, cli, configs, writer
from jaxseg import workdir as run_files
from jaxseg.class_weights import class_weights

BUCKET = "gs://jaxseg-test-bucket"


@pytest.fixture
def bucket(tmp_path):
    """gs://jaxseg-test-bucket/... is tmp_path/...; yields the local root."""

    def local(path):
        text = os.fspath(path)
        assert text.startswith(BUCKET) or not text.startswith("gs://"), text
        return text.replace(BUCKET, str(tmp_path), 1)

    def one(fn, path, *args, **kwargs):
        return fn(local(path), *args, **kwargs)

    def two(fn, path, dst, *args, **kwargs):
        return fn(local(path), local(dst), *args, **kwargs)

    def walk(fn, top, **kwargs):
        for root, dirs, files in fn(local(top), **kwargs):
            yield root.replace(str(tmp_path), BUCKET, 1), dirs, files

    def glob(fn, pattern):
        return [p.replace(str(tmp_path), BUCKET, 1) for p in fn(local(pattern))]

    names = ("exists", "isdir", "listdir", "makedirs", "mkdir", "open", "remove", "rmtree")
    with epath_testing.mock_epath(
        **{n: one for n in names},
        stat=one,
        rename=two,
        replace=two,
        copy=two,
        walk=walk,
        glob=glob,
    ):
        yield tmp_path


def test_run_files_lock_and_changes_on_a_remote_workdir(bucket):
    workdir = f"{BUCKET}/run"
    config = cli.load_experiment(
        os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments", "unet.py")
    )
    source = types.SimpleNamespace(class_names=("a", "b", "c", "d", "e"))  # palette: default
    run_files.write(workdir, config, source)
    assert (bucket / "run" / "config.json").is_file()
    assert run_files.read_config(workdir).to_dict() == config.to_dict()
    assert run_files.read_dataset(workdir)["class_names"] == ("a", "b", "c", "d", "e")
    lock = run_files.RunLock(workdir)
    assert json.loads((bucket / "run" / "lock.json").read_text())["pid"] == os.getpid()
    with pytest.raises(configs.ConfigError, match="in use by the run of pid"):
        run_files.RunLock(workdir)
    lock.release()
    assert not (bucket / "run" / "lock.json").exists()
    with config.unlocked():
        config.optim.lr = 0.5
    run_files.check_resume_config(workdir, config, 10, allow=True)
    run_files.check_resume_config(workdir, config, 20, allow=True)
    lines = (bucket / "run" / "config_changes.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20]


def test_metrics_writer_on_a_remote_workdir_appends_and_truncates_on_resume(bucket):
    workdir = f"{BUCKET}/run"
    log = writer.MetricWriter(workdir, tensorboard=False)
    for step in (1, 2, 3):
        log.write(step, {"train/loss": float(step)})
    log.close()
    resumed = writer.MetricWriter(workdir, resume_step=2, tensorboard=False)
    resumed.write(3, {"train/loss": 30.0})
    resumed.close()
    rows = [
        json.loads(line) for line in (bucket / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows == [
        {"step": 1, "train/loss": 1.0},
        {"step": 2, "train/loss": 2.0},
        {"step": 3, "train/loss": 30.0},
    ]


class _Masks:
    class_names = ("a", "b")

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return {"mask": np.full((2, 2), i % 2, np.uint8)}

    def __repr__(self):
        return "_Masks()"


def test_class_weight_cache_on_a_remote_workdir(bucket):
    weights = class_weights(_Masks(), 2, "inverse", workdir=f"{BUCKET}/run", progress=False)
    cached = json.loads((bucket / "run" / "class_weights.json").read_text())
    assert cached["weights"] == weights.tolist()
    again = class_weights(_Masks(), 2, "inverse", workdir=f"{BUCKET}/run", progress=False)
    np.testing.assert_array_equal(again, weights)


def test_checkpoint_paths_keep_the_scheme(bucket):
    (bucket / "run" / "checkpoints" / "7" / "state").mkdir(parents=True)
    path, step = checkpoint.checkpoints_dir(f"{BUCKET}/run", "--workdir")
    assert (str(path), step) == (f"{BUCKET}/run/checkpoints", None)
    path, step = checkpoint.checkpoints_dir(f"{BUCKET}/run/checkpoints/7", "init_from")
    assert (str(path), step) == (f"{BUCKET}/run/checkpoints", 7)
    assert isinstance(path, epath.Path)
    with pytest.raises(FileNotFoundError, match=f"{BUCKET}/nope"):
        checkpoint.checkpoints_dir(f"{BUCKET}/nope", "init_from")


class _RecordsThroughEpath:
    """tensorboardX's gs:// writer factory without google-cloud-storage (which its own
    needs): event files are opened with epath, so they land in the mocked bucket."""

    def open(self, path):
        return epath.Path(path).open("wb")

    def directory_check(self, path):
        epath.Path(path).mkdir(parents=True, exist_ok=True)


def _scalars(path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in a TensorBoard event file, read by hand: TFRecord
    frames (u64 length, u32 crc, data, u32 crc) of Event protos."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    data, out, at = path.read_bytes(), [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        event = Event.FromString(data[at + 12 : at + 12 + length])
        out += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
        at += 12 + length + 4
    return out


def test_tensorboard_events_on_a_remote_workdir(bucket, monkeypatch):
    from tensorboardX import record_writer

    monkeypatch.setitem(record_writer.REGISTERED_FACTORIES, "gs", _RecordsThroughEpath())
    log = writer.MetricWriter(f"{BUCKET}/run")
    for step in (1, 2, 3):
        log.write(step, {"train/loss": step / 4, "val/miou": float("nan")})
    log.close()
    (events,) = (bucket / "run").glob("events.out.tfevents.*")
    assert _scalars(events) == [
        (1, "train/loss", 0.25),
        (2, "train/loss", 0.5),
        (3, "train/loss", 0.75),
    ]


@pytest.fixture
def gcs_bucket(tmp_path, monkeypatch):
    """gs://jaxseg-test-bucket/... is tmp_path/jaxseg-test-bucket/... for what orbax reaches
    a bucket with: epath's fsspec backend (an fsspec "gcs" file system over a local folder)
    and tensorstore (its kvstore spec for the path, made a local "file" one). Orbax keeps to
    its GCS protocol (commit_success.txt, no renames). Yields the bucket's local folder."""
    import sys

    import fsspec  # noqa: F401  (fsspec.registry, by module, below)
    from etils.epath import backend
    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.implementations.local import LocalFileSystem
    from orbax.checkpoint._src.path import gcs_utils

    class Bucket(DirFileSystem):
        protocol = ("gs", "gcs")

        def __init__(self, *args, **kwargs):
            super().__init__(path=str(tmp_path), fs=LocalFileSystem())

    folder = tmp_path / BUCKET.removeprefix("gs://")
    for name in ("gs", "gcs"):
        monkeypatch.setitem(sys.modules["fsspec.registry"]._registry, name, Bucket)
    monkeypatch.setattr(
        gcs_utils,
        "get_kvstore_for_gcs",
        lambda path: {"driver": "file", "path": os.fspath(path).replace(BUCKET, str(folder))},
    )
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda *a, **k: False)
    backend.fsspec_backend._get_filesystem.cache_clear()
    yield folder
    backend.fsspec_backend._get_filesystem.cache_clear()


def test_checkpoints_on_a_remote_workdir_restore_bit_equal(gcs_bucket):
    import grain.python as grain
    import jax
    import optax

    from jaxseg.models import build_model
    from jaxseg.state import create_train_state

    model = build_model("unet", 5, base_width=2, depth=1)  # params and BatchNorm statistics
    init = jax.jit(lambda key: create_train_state(model, optax.sgd(0.1), key, (16, 16, 3)))
    saved = init(jax.random.key(0))
    manager = checkpoint.make_manager(f"{BUCKET}/run/checkpoints")
    data = iter(grain.MapDataset.range(10).to_iter_dataset())
    next(data)
    checkpoint.save(manager, 3, saved, data)
    checkpoint.wait(manager)
    assert (gcs_bucket / "run" / "checkpoints" / "3" / "state" / "_METADATA").is_file()
    assert checkpoint.choose_step(f"{BUCKET}/run", "latest") == 3
    other = init(jax.random.key(1))
    restored = checkpoint.load_weights(f"{BUCKET}/run", other)
    want = jax.tree.leaves(jax.device_get((saved.params, saved.batch_stats)))
    got = jax.tree.leaves(jax.device_get((restored.params, restored.batch_stats)))
    assert len(got) == len(want) and any(
        not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(other.params), want, strict=False)
    )
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
