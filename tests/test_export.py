"""python -m jaxseg.export: the artifact, read back with jax and numpy alone, gives the live
model's labels; predict --exported writes the masks predict --workdir writes."""

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxseg import export, predict
from jaxseg.models import MODELS, build_model
from jaxseg.segmenter import Segmenter
from tests import reference_inference as R

SIZE = (48, 40)


def _images(count, size=SIZE, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, *size, 3), np.uint8)


@pytest.fixture(scope="module")
def exported(membrane_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    manifest = export.main(
        ["--workdir", membrane_run[0], "--out", str(out), "--size", "48x40", "--validate", "3"]
    )
    return out, manifest


def test_round_trip_with_jax_and_numpy_alone(membrane_run, exported):
    out, manifest = exported
    with open(out / "model.jaxexport", "rb") as f:
        data = f.read()
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"]
    exp = jax.export.deserialize(bytearray(data))
    images = _images(3)
    labels = np.asarray(exp.call(images))
    assert labels.shape == (3, *SIZE) and labels.dtype == np.int32
    live = Segmenter.from_workdir(membrane_run[0]).predict(images)
    assert np.mean(labels == live) == 1.0
    assert np.asarray(exp.call(images[:1])).shape == (1, *SIZE)  # any batch
    assert set(manifest["platforms"]) == {"cpu", "cuda", "tpu"}
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["class_names"] == ["membrane", "cell"]
    assert (saved["input"]["height"], saved["input"]["width"]) == SIZE
    assert saved["source"] == {  # the run's last checkpoint, its one seed (the default 0)
        "workdir": os.path.abspath(membrane_run[0]),
        "checkpoint_step": 6,
        "seed": 0,
        "seed_index": 0,
    }
    assert saved["output"]["kind"] == "labels" and saved["inference"]["mode"] == "whole"
    assert saved["validation"]["equal_labels"] == 1.0
    assert saved["validation"]["max_logit_diff"] < 1e-4
    assert "membrane" in saved["validation"]["from"]
    assert saved["versions"]["jax"] == jax.__version__ and saved["date"].startswith("20")


def test_a_bad_size_is_one_line_naming_it(membrane_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        export.main(["--workdir", membrane_run[0], "--out", str(tmp_path), "--size", "48by40"])
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("jaxseg.export: error: --size: size '48by40' is not HxW")


def test_params_as_args_logits_and_slide(membrane_run, tmp_path):
    out = tmp_path / "export"
    manifest = export.export_run(
        membrane_run[0],
        str(out),
        size=SIZE,
        output="logits",
        params_as_args=True,
        platforms=("cpu",),
        overrides={"eval.mode": "slide", "eval.crop_size": (32, 32)},
        validate_count=2,
    )
    assert manifest["validation"]["equal_labels"] == 1.0
    exp = jax.export.deserialize(bytearray((out / "model.jaxexport").read_bytes()))
    with np.load(out / "params.npz") as f:
        params = [f[f"arr_{i}"] for i in range(len(f.files))]
    images = _images(2, seed=1)
    logits = np.asarray(exp.call(params, images))
    assert logits.shape == (2, *SIZE, 2)
    live = Segmenter.from_workdir(membrane_run[0], eval={"mode": "slide", "crop_size": (32, 32)})
    np.testing.assert_allclose(logits, live.run(list(images), "logits"), atol=1e-4)
    assert os.path.getsize(out / "model.jaxexport") < os.path.getsize(out / "params.npz")


def test_predict_exported_writes_the_workdir_masks(membrane_run, exported, tmp_path):
    export_dir, _ = exported
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(_images(3, seed=2)):
        Image.fromarray(image).save(photos / f"{i}.png")
    a, b = tmp_path / "a", tmp_path / "b"
    predict.main(["--workdir", membrane_run[0], "--out", str(a), str(photos)])
    predict.main(["--exported", str(export_dir), "--out", str(b), str(photos)])
    for i in range(3):
        np.testing.assert_array_equal(
            np.asarray(Image.open(a / f"{i}.png")), np.asarray(Image.open(b / f"{i}.png"))
        )


def test_exported_logits_slide_over_larger_images(membrane_run, tmp_path):
    out = tmp_path / "export"
    export.export_run(membrane_run[0], str(out), size=(32, 32), output="logits", platforms=("cpu",))
    seg = Segmenter.from_export(str(out))
    image = _images(1, size=(70, 45), seed=3)[0]
    labels = seg.predict(image)
    assert labels.shape == (70, 45)
    # Against MMSeg's slide loop (tests/reference_inference.py) over the trained model
    # itself, on the export's grid (32x32 windows, stride 21).
    live = Segmenter.from_workdir(membrane_run[0])
    x = R.normalised(image, live.mean, live.std)
    want = R.slide(R.forward(live.model, live.variables), x, (32, 32), (21, 21))
    np.testing.assert_allclose(seg.run([image], "logits")[0], want, atol=1e-4, rtol=0)
    sure = np.abs(want[..., 1] - want[..., 0]) > 1e-3  # not a near-tie
    np.testing.assert_array_equal(labels[sure], want.argmax(-1)[sure])
    assert sure.mean() > 0.99
    labels_only = tmp_path / "labels"
    export.export_run(membrane_run[0], str(labels_only), size=(32, 32), platforms=("cpu",))
    with pytest.raises(ValueError, match="export with --output logits"):
        Segmenter.from_export(str(labels_only)).predict(image)


def test_damaged_artifact_is_refused(exported, tmp_path):
    export_dir, _ = exported
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "manifest.json").write_text((export_dir / "manifest.json").read_text())
    data = bytearray((export_dir / "model.jaxexport").read_bytes())
    data[100] ^= 1
    (copy / "model.jaxexport").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 differs"):
        Segmenter.from_export(str(copy))


def test_onnx_export_gives_the_live_labels(membrane_run, tmp_path):
    """The `onnx` extra (jax2onnx, onnxruntime): skipped where it is not installed."""
    pytest.importorskip("jax2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    manifest = export.export_run(membrane_run[0], str(out), size=SIZE, fmt="onnx", validate_count=2)
    assert manifest["validation"]["equal_labels"] == 1.0
    assert manifest["validation"]["max_logit_diff"] < 1e-4
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    images = _images(3, seed=4)
    labels = session.run(None, {"images": images})[0]
    live = Segmenter.from_workdir(membrane_run[0]).predict(images)
    assert labels.shape == (3, *SIZE) and np.mean(labels == live) == 1.0
    with pytest.raises(ValueError, match="whole only"):
        export.export_run(
            membrane_run[0], str(tmp_path / "x"), fmt="onnx", overrides={"eval.mode": "slide"}
        )


def test_artifact_declares_and_deserialises_for_cpu_cuda_and_tpu(membrane_run, exported):
    """The default export is lowered for cpu, cuda and tpu; read back, it says so and on the
    CPU gives what the same function exported for the CPU alone gives."""
    out, manifest = exported
    assert manifest["platforms"] == ["cpu", "cuda", "tpu"]
    assert json.loads((out / "manifest.json").read_text())["platforms"] == manifest["platforms"]
    exp = jax.export.deserialize(bytearray((out / "model.jaxexport").read_bytes()))
    assert exp.platforms == ("cpu", "cuda", "tpu")
    seg = Segmenter.from_workdir(membrane_run[0])
    images = _images(2, seed=5)
    everywhere, _ = export.export_jax(seg, SIZE, "logits")
    cpu_only, _ = export.export_jax(seg, SIZE, "logits", platforms=("cpu",))
    everywhere = jax.export.deserialize(everywhere.serialize())
    assert everywhere.platforms == ("cpu", "cuda", "tpu")
    np.testing.assert_array_equal(
        np.asarray(everywhere.call(images)),
        np.asarray(jax.export.deserialize(cpu_only.serialize()).call(images)),
    )
    np.testing.assert_array_equal(np.asarray(exp.call(images)), seg.predict(images))


@pytest.mark.parametrize(
    "overrides",
    [
        {"eval.mode": "slide", "eval.crop_size": (32, 32)},
        {"eval.scales": (0.75, 1.0), "eval.flip": True},
        {"eval.crf.enabled": True},
    ],
    ids=["slide", "tta", "crf"],
)
def test_inference_modes_lower_for_cpu_cuda_and_tpu(membrane_run, overrides):
    seg = Segmenter.from_workdir(membrane_run[0], overrides=overrides)
    exp, _ = export.export_jax(seg, SIZE, "labels")
    assert jax.export.deserialize(exp.serialize()).platforms == ("cpu", "cuda", "tpu")


def test_every_model_lowers_for_cpu_cuda_and_tpu():
    """Lowering only (no device of the kind needed): weights as arguments, shapes from
    eval_shape; no op of any model is platform-specific (no CPU-only custom call)."""
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    for name in sorted(MODELS):
        model = build_model(name, 4)
        variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
        fn = jax.jit(lambda v, x, model=model: model.apply(v, x)[0])
        exp = jax.export.export(fn, platforms=("cpu", "cuda", "tpu"))(variables, x)
        assert jax.export.deserialize(exp.serialize()).platforms == ("cpu", "cuda", "tpu"), name


@pytest.mark.parametrize(
    "value,message",
    [
        ("cpu,gpu", "--platforms: unknown gpu; valid: cpu, cuda, rocm, tpu"),
        ("cpu,cpu", "--platforms names one twice: cpu,cpu"),
        ("", "--platforms is empty; valid: cpu, cuda, rocm, tpu"),
        ("tpu", "--validate runs the artifact here (cpu): add it to --platforms"),
    ],
    ids=["unknown", "repeat", "empty", "not-here"],
)
def test_bad_platforms_are_one_line_naming_them(membrane_run, tmp_path, capsys, value, message):
    argv = ["--workdir", membrane_run[0], "--out", str(tmp_path), "--platforms", value]
    with pytest.raises(SystemExit) as e:
        export.main([*argv, "--validate", "1"])
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"jaxseg.export: error: {message}"
