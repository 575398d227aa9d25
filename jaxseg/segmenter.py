"""A trained run, or an export of one, as a Python object: u8 images in, class labels or
probabilities out, on whatever devices are present.

    seg = jaxseg.Segmenter.from_workdir("runs/mem")            # newest checkpoint
    labels = seg.predict(image)              # u8[H,W,3] (or [H,W] grey) -> i32[H,W]
    labels = seg.predict(batch)              # u8[B,H,W,3] -> i32[B,H,W]
    probs = seg.predict_proba(image)         # f32[H,W,K], softmax (averaged over TTA views)
    masks = seg.predict([a, b])              # images of different sizes -> a list
    seg = jaxseg.Segmenter.from_workdir("runs/mem", eval={"mode": "slide", "flip": True})
    exp = jaxseg.Segmenter.from_export("export/mem")  # the same API on a jax.export artifact

Inference is jaxseg.inference.scores with the run's `eval` settings (overridable). Only
params and BatchNorm statistics are restored; no optimizer state, no dataset.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os

import jax
import numpy as np

from jaxseg import config_checks, configs, inference, recipe, sharding, visualize
from jaxseg import workdir as run_files

OUTPUTS = ("labels", "probs", "logits")


def select_output(scores: jax.Array, output: str):
    """scores f32[B,H,W,K] -> labels i32[B,H,W], probs f32[B,H,W,K] or the scores."""
    if output == "labels":
        return inference.labels(scores)
    if output == "probs":
        return jax.nn.softmax(scores, axis=-1)
    return scores


def _as_batch(images) -> tuple[list[np.ndarray], bool, bool]:
    """(list of u8[H,W,3], was one image, was a list) from an image, a batch or a list."""
    if isinstance(images, list | tuple):
        return [_as_rgb(np.asarray(im)) for im in images], False, True
    array = np.asarray(images)
    if array.ndim == 4:
        return [_as_rgb(im) for im in array], False, False
    return [_as_rgb(array)], True, False


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 (got {image.dtype}); read files with "
            "jaxseg.data.images.read_rgb, which converts every mode"
        )
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"an image must be [H,W,3] or [H,W], got shape {image.shape}")
    return image


def _split(results: np.ndarray, images: list[np.ndarray], one: bool, listed: bool):
    """The batch output cut back to each image's own size, in the caller's form."""
    cut = [r[: im.shape[0], : im.shape[1]] for r, im in zip(results, images, strict=False)]
    if one:
        return cut[0]
    return cut if listed else np.stack(cut)


class Segmenter:
    """A model, its restored variables and the labels of its classes (see module doc)."""

    def __init__(
        self,
        model,
        variables: dict,
        *,
        class_names: tuple[str, ...],
        palette,
        mean,
        std,
        settings: inference.Settings,
        mesh=None,
        step: int | None = None,
        config=None,
        seed_index: int = 0,
    ):
        self.model, self.variables = model, variables
        self.seed_index = seed_index  # the replica of a config.seeds > 1 run (0: the only one)
        self.class_names, self.palette = tuple(class_names), tuple(palette)
        self.mean, self.std = tuple(mean), tuple(std)
        self.settings, self.step, self.config = settings, step, config
        self.mesh = sharding.make_mesh(jax.local_devices()) if mesh is None else mesh
        self._fns = {}

    @classmethod
    def from_workdir(
        cls,
        path: str,
        *,
        checkpoint: str = "latest",
        overrides: dict | None = None,
        seed_index: int | None = None,
        **sections,
    ) -> Segmenter:
        """The run in workdir `path` at checkpoint "latest", "best" or a step number; of a
        seeds > 1 run, replica seed_index (default: the best by val mIoU).

        overrides: {"eval.mode": "slide", ...} on top of the saved config; or per section,
        e.g. eval={"mode": "slide", "crop_size": (256, 256)}: the inference settings
        (config_checks.INFERENCE_FIELDS) may change, nothing else.
        """
        changes = dict(overrides or {})
        for section, values in sections.items():
            changes |= {f"{section}.{k}": v for k, v in values.items()}
        bad = [k for k in changes if k not in config_checks.INFERENCE_FIELDS]
        if bad:
            takes = ", ".join(config_checks.INFERENCE_FIELDS)
            raise configs.ConfigError(f"{bad[0]} does not act on a Segmenter; it takes {takes}")
        config = config_checks.trained_config(path, changes)
        if config.data.channels != 3:  # images here are files and arrays of RGB
            raise configs.ConfigError(
                f"{path}: the run reads {config.data.channels}-channel images; Segmenter, "
                "predict and export take RGB images (evaluate scores the run on its dataset)"
            )
        labels = run_files.read_dataset(path)
        model = recipe.build_model(config, len(labels["class_names"]))
        mesh = sharding.make_mesh(jax.local_devices())
        if config.seeds > 1 and seed_index is None:
            seed_index = recipe.best_seed_index(config, path)
        variables, step = recipe.inference_variables(
            config, model, path, checkpoint, mesh, seed_index
        )
        return cls(
            model,
            variables,
            class_names=labels["class_names"],
            palette=labels["palette"],
            mean=labels["mean"],
            std=labels["std"],
            settings=recipe.inference_settings(config, mesh.devices.size),
            mesh=mesh,
            step=step,
            config=config,
            seed_index=seed_index or 0,
        )

    @staticmethod
    def from_export(path: str) -> ExportedSegmenter:
        """A jaxseg.export directory (model.jaxexport + manifest.json) behind the same API."""
        return ExportedSegmenter(path)

    def function(self, output: str = "labels", full: bool = False):
        """The jitted f(variables, images u8[B,H,W,3], sizes i32[B,2]) -> output, whole mode
        with the batch split over the devices, slide with the windows split instead.

        full: every image fills the canvas, so f takes (variables, images) and computes
        exactly what an export of the same settings does (no padding masks)."""
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r}; valid: {', '.join(OUTPUTS)}")
        if (output, full) not in self._fns:
            replicated = sharding.replicated(self.mesh)
            split = sharding.batch_sharding(self.mesh)
            slide = self.settings.mode == "slide"
            # Slide: one large image is many windows; the windows, not the images, split.
            images = replicated if slide else split
            scores = functools.partial(
                inference.scores,
                model=self.model,
                mean=self.mean,
                std=self.std,
                settings=self.settings,
                window_sharding=split if slide else None,
            )
            if full:
                fn = jax.jit(
                    lambda v, x: select_output(scores(v, x), output),
                    in_shardings=(replicated, images),
                    out_shardings=images,
                )
            else:
                fn = jax.jit(
                    lambda v, x, s: select_output(scores(v, x, s), output),
                    in_shardings=(replicated, images, images),
                    out_shardings=images,
                )
            self._fns[output, full] = fn
        return self._fns[output, full]

    def run(
        self,
        images: list[np.ndarray],
        output: str = "labels",
        *,
        canvas: tuple[int, int] | None = None,
        batch: int | None = None,
    ) -> np.ndarray:
        """The output for a list of u8[h,w,3] images on one canvas (default: the largest h
        and w), in whole mode padded to `batch` images (a fixed batch: one compile per
        canvas): labels i32[B,H,W] or probs/logits f32[B,H,W,K], to be cut back to each
        image's size."""
        height, width = canvas or (
            max(im.shape[0] for im in images),
            max(im.shape[1] for im in images),
        )
        if self.settings.mode == "slide":  # windows fill the forward passes, not images:
            count = len(images)  # padding images would only add windows to compute
        else:
            devices = self.mesh.devices.size
            count = math.ceil(max(len(images), batch or 0) / devices) * devices
        sizes = np.full((count, 2), (height, width), np.int32)
        if count == 1 and images[0].shape[:2] == (height, width):
            padded = images[0][None]  # no copy of what may be a very large image
        else:
            padded = np.zeros((count, height, width, 3), np.uint8)
            for i, im in enumerate(images):
                padded[i, : im.shape[0], : im.shape[1]] = im
        for i, im in enumerate(images):
            sizes[i] = im.shape[:2]
        if all(im.shape[:2] == (height, width) for im in images):
            out = self.function(output, full=True)(self.variables, padded)
        else:
            out = self.function(output)(self.variables, padded, sizes)
        return np.asarray(jax.device_get(out))[: len(images)]

    def predict(self, images):
        """Class indices i32[H,W] (or [B,H,W], or a list) for u8 image(s)."""
        batch, one, listed = _as_batch(images)
        return _split(self.run(batch, "labels"), batch, one, listed)

    def predict_proba(self, images):
        """Softmax f32[H,W,K] (or [B,H,W,K], or a list) for u8 image(s)."""
        batch, one, listed = _as_batch(images)
        return _split(self.run(batch, "probs"), batch, one, listed)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """u8[H,W,3] class colours of labels int[H,W]."""
        return visualize.colorize(labels, self.palette)

    def overlay(self, image: np.ndarray, labels: np.ndarray, opacity: float = 0.5) -> np.ndarray:
        return visualize.overlay(_as_rgb(image), labels, self.palette, opacity)


class ExportedSegmenter:
    """A jax.export artifact driven from the host with jax and numpy only: images of the
    export's size in one call; other sizes by sliding windows of that size (needs an export
    with --output logits or probs), averaged as jaxseg.inference does."""

    def __init__(self, path: str):
        manifest_path = os.path.join(path, "manifest.json")
        if not os.path.isfile(manifest_path):
            raise FileNotFoundError(f"{path} has no manifest.json: is it a jaxseg.export dir?")
        with open(manifest_path) as f:
            self.manifest = manifest = json.load(f)
        if manifest.get("format") != "jax.export":
            raise ValueError(
                f"{manifest_path}: format {manifest.get('format')!r} is not jax.export"
            )
        artifact = os.path.join(path, manifest["artifact"])
        with open(artifact, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
            raise ValueError(f"{artifact}: sha256 differs from the manifest (damaged or replaced)")
        self.exported = jax.export.deserialize(bytearray(data))
        self.params = None
        if manifest.get("params_as_args"):
            with np.load(os.path.join(path, manifest["params_file"])) as f:
                self.params = [f[f"arr_{i}"] for i in range(len(f.files))]
        self.class_names = tuple(manifest["class_names"])
        self.palette = tuple(tuple(c) for c in manifest["palette"])
        self.size = (manifest["input"]["height"], manifest["input"]["width"])
        self.output = manifest["output"]["kind"]
        self.mean = np.asarray(manifest["mean"], np.float32)
        self.stride = tuple(max(1, round(2 * c / 3)) for c in self.size)

    def call(self, images: np.ndarray) -> np.ndarray:
        """The export on u8[B,H,W,3] at its own size."""
        if self.params is not None:
            return np.asarray(self.exported.call(self.params, images))
        return np.asarray(self.exported.call(images))

    def _scores(self, image: np.ndarray) -> np.ndarray:
        """Window-averaged output f32[h,w,K] of one image of any size (MMSeg's grid)."""
        if self.output == "labels":
            raise ValueError(
                f"image {image.shape[0]}x{image.shape[1]} differs from the export's "
                f"{self.size[0]}x{self.size[1]}: export with --output logits (or probs) to "
                "predict other sizes with sliding windows"
            )
        (h, w), (ch, cw), (sh, sw) = image.shape[:2], self.size, self.stride
        # Smaller images are padded with the mean colour (0 after the export's normalising).
        padded = np.empty((max(h, ch), max(w, cw), 3), np.uint8)
        padded[:] = np.rint(self.mean * 255).astype(np.uint8)
        padded[:h, :w] = image
        ph, pw = padded.shape[:2]
        origins = [
            (min(i * sh, ph - ch), min(j * sw, pw - cw))
            for i in range(max(ph - ch + sh - 1, 0) // sh + 1)
            for j in range(max(pw - cw + sw - 1, 0) // sw + 1)
        ]
        total, count = None, np.zeros((ph, pw, 1), np.float32)
        for y, x in origins:
            out = self.call(padded[None, y : y + ch, x : x + cw])[0]
            total = np.zeros((ph, pw, out.shape[-1]), np.float32) if total is None else total
            total[y : y + ch, x : x + cw] += out
            count[y : y + ch, x : x + cw] += 1
        return (total / count)[:h, :w]

    def run(
        self, images: list[np.ndarray], output: str = "labels", *, canvas=None, batch=None
    ) -> list[np.ndarray]:
        """Outputs for each u8[h,w,3] image at its own size (canvas and batch are
        Segmenter.run's; the export runs image by image)."""
        out = []
        for image in images:
            if image.shape[:2] == self.size:
                result = self.call(image[None])[0]
            else:
                result = self._scores(image)
            if output == "labels" and self.output != "labels":
                result = np.argmax(result, axis=-1).astype(np.int32)
            elif output == "probs" and self.output == "logits":
                e = np.exp(result - result.max(axis=-1, keepdims=True))
                result = e / e.sum(axis=-1, keepdims=True)
            elif output != "labels" and self.output == "labels":
                raise ValueError("this export returns labels only: export with --output probs")
            out.append(result)
        return out

    def predict(self, images):
        batch, one, listed = _as_batch(images)
        results = self.run(batch, "labels")
        return results[0] if one else (results if listed else np.stack(results))

    def predict_proba(self, images):
        batch, one, listed = _as_batch(images)
        results = self.run(batch, "probs")
        return results[0] if one else (results if listed else np.stack(results))

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        return visualize.colorize(labels, self.palette)

    def overlay(self, image: np.ndarray, labels: np.ndarray, opacity: float = 0.5) -> np.ndarray:
        return visualize.overlay(_as_rgb(image), labels, self.palette, opacity)
