"""Export a trained run for serving: jax.export (StableHLO) with a manifest; ONNX as an extra.

    python -m jaxseg.export --workdir runs/mem --out export/mem
    python -m jaxseg.export --workdir runs/mem --out export/mem --size 512x512 \\
      --output logits --validate 8

The exported function takes one argument, images u8[b, H, W, 3] (a symbolic batch b; H, W
from --size, default the run's eval.size), normalises inside, runs jaxseg.inference with
the run's eval settings (whole, slide or TTA; --config.eval.* changes them) and returns
class indices i32[b, H, W] (--output labels), softmax f32[b, H, W, K] (probs) or scores
(logits). Weights are embedded (--params_as_args keeps them in params.npz beside the
artifact, for models near the 2 GB limit of serialized modules). It is lowered for the
platforms in --platforms (default cpu, cuda and tpu). Using it needs only jax and numpy:

    import jax, numpy as np
    exp = jax.export.deserialize(bytearray(open("export/mem/model.jaxexport", "rb").read()))
    labels = np.asarray(exp.call(images_u8))            # u8[b, H, W, 3] -> i32[b, H, W]

manifest.json names the classes, palette, input and output, mean/std, the inference
settings, the date and versions (jaxseg, jax, jaxlib, flax, python) and the artifact's
sha256. Larger images: jaxseg.predict --exported DIR slides windows of the export's size
over them (needs --output logits or probs). --validate N runs N images through the
artifact and the live model and prints the largest logit difference and the share of equal
labels. --format onnx writes model.onnx instead (pip install -e '.[onnx]'; whole mode,
fixed H, W, dynamic batch).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from jaxseg import cli, config_checks, configs, inference, provenance, recipe, sharding
from jaxseg.segmenter import OUTPUTS, Segmenter, select_output

ALLOWED = config_checks.INFERENCE_FIELDS  # --config.* keys that act here
ARTIFACT = "model.jaxexport"
# jax.export's lowering platforms; lowering needs no device of the kind. Every model in
# MODELS, and slide, TTA and CRF inference, lower for the default three (tests/test_export.py).
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
PARAMS = "params.npz"
OUTPUT_MEANING = {
    "labels": "class indices i32[b, H, W]",
    "probs": "softmax probabilities f32[b, H, W, K], averaged over the TTA views",
    "logits": "scores f32[b, H, W, K]: logits (one view) or log mean softmax (TTA views)",
}


def exported_function(seg: Segmenter, output: str, params_as_args: bool):
    """(f, leaves): f(images) with the variables as constants, or f(leaves, images)."""
    host = jax.device_get(seg.variables)  # constants on no particular device
    leaves, treedef = jax.tree.flatten(host)
    scores = functools.partial(
        inference.scores, model=seg.model, mean=seg.mean, std=seg.std, settings=seg.settings
    )
    if params_as_args:

        def f(leaves, images):
            return select_output(scores(jax.tree.unflatten(treedef, leaves), images), output)

        return f, leaves
    return (lambda images: select_output(scores(host, images), output)), leaves


def check_platforms(platforms) -> tuple[str, ...]:
    """platforms as a tuple; a ConfigError names an empty list, a repeat or an unknown one."""
    platforms = tuple(platforms)
    if not platforms:
        raise configs.ConfigError(f"--platforms is empty; valid: {', '.join(PLATFORMS)}")
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown:
        raise configs.ConfigError(
            f"--platforms: unknown {', '.join(unknown)}; valid: {', '.join(PLATFORMS)}"
        )
    if len(set(platforms)) < len(platforms):
        raise configs.ConfigError(f"--platforms names one twice: {','.join(platforms)}")
    return platforms


def export_jax(seg, size, output, *, params_as_args=False, platforms=DEFAULT_PLATFORMS):
    """The jax.export.Exported of seg at size (H, W) with a symbolic batch, lowered for each
    of platforms (check_platforms), and its leaves."""
    platforms = check_platforms(platforms)
    fn, leaves = exported_function(seg, output, params_as_args)
    (batch,) = jax.export.symbolic_shape("b")
    images = jax.ShapeDtypeStruct((batch, *size, 3), jnp.uint8)
    args = (images,)
    if params_as_args:
        args = ([jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves], images)
    return jax.export.export(jax.jit(fn), platforms=platforms)(*args), leaves


def export_onnx(seg, size, output, path: str) -> list[str]:
    """model.onnx through jax2onnx (the `onnx` extra): fixed H, W, dynamic batch "b".
    Returns the files written (the model and its external weights)."""
    if seg.settings.mode != "whole":
        raise configs.ConfigError("--format onnx exports eval.mode=whole only")
    if seg.settings.crf is not None:  # its scans and dynamic slices are not checked in ONNX
        raise configs.ConfigError("--format onnx exports without eval.crf; use --format jax")
    # jax2onnx 0.13 logs a traceback for each dm_pix plugin it cannot load under this jax
    # (plugins jaxseg does not use) and prints its progress; onnx_ir notes shapes it cannot
    # type. Keep their errors only.
    for name in ("jax2onnx", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from jax2onnx import to_onnx
    except ImportError:
        raise configs.ConfigError(
            "--format onnx needs the onnx extra: pip install -e '.[onnx]'"
        ) from None
    fn, _ = exported_function(seg, output, params_as_args=False)
    before = set(os.listdir(os.path.dirname(path) or "."))
    with contextlib.redirect_stdout(io.StringIO()):
        to_onnx(
            fn,
            [jax.ShapeDtypeStruct(("b", *size, 3), jnp.uint8)],
            model_name="jaxseg",
            input_names=["images"],
            output_names=[output],
            return_mode="file",
            output_path=path,
        )
    written = set(os.listdir(os.path.dirname(path) or ".")) - before
    return sorted({os.path.basename(path)} | {f for f in written if f.startswith("model.onnx")})


def onnx_session(path: str):
    """An onnxruntime session on the CPU (its shape-merge notices silenced)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def validation_images(seg: Segmenter, size, count: int) -> tuple[np.ndarray, str]:
    """count u8 images at size from the run's val split (cropped or padded at the
    bottom/right), or random ones when the data is not at hand; and where they came from."""
    try:
        source = recipe.make_source(seg.config, "val")
        picked = [source[i]["image"] for i in range(min(count, len(source)))]
        where = f"the run's val split ({seg.config.data.name})"
    except Exception:  # the dataset need not be present to export
        picked, where = [], "random images (the val split is not readable here)"
    rng = np.random.default_rng(0)
    while len(picked) < count:
        picked.append(rng.integers(0, 256, (*size, 3), np.uint8))
    out = np.zeros((count, *size, 3), np.uint8)
    for i, image in enumerate(picked):
        h, w = min(size[0], image.shape[0]), min(size[1], image.shape[1])
        out[i, :h, :w] = image[:h, :w, :3]
    return out, where


def validate(seg, call, logits_call, size, count: int, output: str) -> dict:
    """Max |logit difference| and the share of equal labels, export against live model.

    call(images): the artifact's output; logits_call(images): the scores of the same
    function exported the same way with output logits (the artifact itself when its output
    is logits)."""
    images, where = validation_images(seg, size, count)
    live_scores = seg.run(list(images), "logits")
    got = np.asarray(call(images))
    labels = got if output == "labels" else got.argmax(-1)
    exported_scores = got if output == "logits" else np.asarray(logits_call(images))
    return {
        "images": count,
        "from": where,
        "max_logit_diff": float(np.abs(exported_scores - live_scores).max()),
        "equal_labels": float(np.mean(labels == live_scores.argmax(-1))),
    }


def _check_runs_here(platforms) -> None:
    """--validate runs the artifact on this machine: its platform must be among them."""
    here = jax.default_backend()
    if not ({here} | ({"cuda", "rocm"} if here == "gpu" else set())) & set(platforms):
        raise configs.ConfigError(
            f"--validate runs the artifact here ({here}): add it to --platforms"
        )


def export_run(
    workdir: str,
    out: str,
    *,
    checkpoint: str = "latest",
    size: tuple[int, int] | None = None,
    output: str = "labels",
    fmt: str = "jax",
    params_as_args: bool = False,
    platforms=DEFAULT_PLATFORMS,
    overrides: dict | None = None,
    validate_count: int = 0,
    seed_index: int | None = None,
) -> dict:
    """Writes the export of the run in workdir to out; returns the manifest (see doc)."""
    if output not in OUTPUTS:
        raise configs.ConfigError(f"--output={output!r}; valid: {', '.join(OUTPUTS)}")
    if fmt == "jax":
        platforms = check_platforms(platforms)
        if validate_count:
            _check_runs_here(platforms)
    seg = Segmenter.from_workdir(
        workdir, checkpoint=checkpoint, overrides=overrides, seed_index=seed_index
    )
    size = tuple(size or seg.config.eval.size)
    os.makedirs(out, exist_ok=True)
    manifest = {
        "format": "jax.export" if fmt == "jax" else "onnx",
        "source": {
            "workdir": os.path.abspath(workdir),
            "checkpoint_step": seg.step,
            "seed": seg.config.seed + seg.seed_index,  # the replica's, of a seeds > 1 run
            "seed_index": seg.seed_index,
        },
        "model": seg.config.model.name,
        "class_names": list(seg.class_names),
        "palette": [list(c) for c in seg.palette],
        "input": {
            "name": "images",
            "dtype": "uint8",
            "shape": ["b", size[0], size[1], 3],
            "height": size[0],
            "width": size[1],
            "layout": "NHWC, RGB, 0-255; b is symbolic (any batch)",
        },
        "output": {"kind": output, "meaning": OUTPUT_MEANING[output]},
        "mean": list(seg.mean),
        "std": list(seg.std),
        "normalisation": "inside: (x / 255 - mean) / std",
        "inference": seg.settings.describe(),
        **provenance.stamp(),  # "date", "versions"
    }
    if fmt == "onnx":
        files = export_onnx(seg, size, output, os.path.join(out, "model.onnx"))
        manifest |= {
            "artifact": "model.onnx",
            "sha256": _sha256_file(os.path.join(out, "model.onnx")),
            "files": {f: _sha256_file(os.path.join(out, f)) for f in files},
        }
    else:
        exported, leaves = export_jax(
            seg, size, output, params_as_args=params_as_args, platforms=platforms
        )
        data = exported.serialize()
        _write_bytes(os.path.join(out, ARTIFACT), data)
        manifest |= {
            "artifact": ARTIFACT,
            "sha256": hashlib.sha256(data).hexdigest(),
            "platforms": list(exported.platforms),
            "params_as_args": params_as_args,
        }
        if params_as_args:
            manifest |= _write_params(out, leaves)
    if validate_count:
        manifest["validation"] = _validate_artifact(
            seg, out, size, output, fmt, validate_count, params_as_args
        )
    _write_bytes(os.path.join(out, "manifest.json"), json.dumps(manifest, indent=2).encode())
    return manifest


def _write_params(out: str, leaves) -> dict:
    """Writes the weights of a params_as_args export (atomically); its manifest entries."""
    path = os.path.join(out, PARAMS)
    tmp = path + f".tmp{os.getpid()}.npz"
    np.savez(tmp, *leaves)
    os.replace(tmp, path)
    return {
        "params_file": PARAMS,
        "call": "exp.call([params['arr_0'], params['arr_1'], ...], images)",
    }


def _validate_artifact(seg, out, size, output, fmt, count, params_as_args) -> dict:
    """validate() on the files just written, read back as a user would."""
    if fmt == "onnx":
        session = onnx_session(os.path.join(out, "model.onnx"))
        call = lambda images: session.run(None, {"images": images})[0]  # noqa: E731
        logits_call = None
        if output != "logits":
            with tempfile.TemporaryDirectory() as tmp:
                export_onnx(seg, size, "logits", os.path.join(tmp, "model.onnx"))
                logits_session = onnx_session(os.path.join(tmp, "model.onnx"))
            logits_call = lambda images: logits_session.run(None, {"images": images})[0]  # noqa: E731
        return validate(seg, call, logits_call, size, count, output)
    with open(os.path.join(out, ARTIFACT), "rb") as f:
        restored = jax.export.deserialize(bytearray(f.read()))
    args = ()
    if params_as_args:
        with np.load(os.path.join(out, PARAMS)) as f:
            args = ([f[f"arr_{i}"] for i in range(len(f.files))],)
    call = lambda images: restored.call(*args, images)  # noqa: E731
    logits_call = None
    if output != "logits":
        logits, _ = export_jax(seg, size, "logits", platforms=("cpu",))
        logits = jax.export.deserialize(logits.serialize())
        logits_call = logits.call
    return validate(seg, call, logits_call, size, count, output)


def _sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _flags(argv) -> flags.FlagValues:
    fv = flags.FlagValues()
    define = dict(flag_values=fv)
    flags.DEFINE_string("workdir", None, "a jaxseg.train run directory", **define)
    flags.DEFINE_string("out", None, "export directory", **define)
    flags.DEFINE_string("checkpoint", "latest", "latest, best (by val/miou) or a step", **define)
    flags.DEFINE_integer(
        "seed_index", None, "replica of a --config.seeds>1 run (default: best val mIoU)", **define
    )
    flags.DEFINE_string("size", None, "input HxW (default the run's eval.size)", **define)
    flags.DEFINE_enum("output", "labels", list(OUTPUTS), "what the export returns", **define)
    flags.DEFINE_enum("format", "jax", ["jax", "onnx"], "jax.export or ONNX", **define)
    flags.DEFINE_bool("params_as_args", False, "weights in params.npz, not embedded", **define)
    flags.DEFINE_list(
        "platforms",
        list(DEFAULT_PLATFORMS),
        f"jax.export lowering platforms, a comma list of {', '.join(PLATFORMS)}",
        **define,
    )
    flags.DEFINE_integer("validate", 0, "compare N images with the live model", 0, **define)
    flags.DEFINE_alias("params-as-args", "params_as_args", flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)
    flags.mark_flag_as_required("out", flag_values=fv)
    return fv


def main(argv=None) -> dict:
    """The command line: argv without the program name (default sys.argv[1:])."""
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = "jaxseg.export"
    fv = _flags(argv)
    cli.parse_flags(fv, argv, prog=prog, doc=__doc__, config_from="workdir", allowed=ALLOWED)
    sharding.initialize_distributed()
    try:
        if fv.format == "onnx" and (fv.params_as_args or fv["platforms"].present):
            raise configs.ConfigError("--params_as_args and --platforms are for --format jax")
        try:
            size = cli.parse_size(fv.size) if fv.size else None
        except ValueError as e:
            raise configs.ConfigError(f"--size: {e}") from None
        manifest = export_run(
            fv.workdir,
            fv.out,
            checkpoint=fv.checkpoint,
            size=size,
            output=fv.output,
            fmt=fv.format,
            params_as_args=fv.params_as_args,
            platforms=tuple(fv.platforms),
            overrides=cli.overrides(fv, argv, ALLOWED),
            validate_count=fv.validate,
            seed_index=fv.seed_index,
        )
    except (configs.ConfigError, FileNotFoundError) as e:
        cli.fail(prog, str(e))
    print(
        f"exported {manifest['model']} (checkpoint step {manifest['source']['checkpoint_step']}) "
        f"to {os.path.join(fv.out, manifest['artifact'])}: input u8[b, "
        f"{manifest['input']['height']}, {manifest['input']['width']}, 3] -> "
        f"{manifest['output']['meaning']}"
    )
    if "validation" in manifest:
        v = manifest["validation"]
        print(
            f"validation on {v['images']} {v['from']}: max |logit difference| "
            f"{v['max_logit_diff']:.3g}, equal labels {100 * v['equal_labels']:.4f}%"
        )
    return manifest


if __name__ == "__main__":
    cli.run(main)
