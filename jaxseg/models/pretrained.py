"""Pretrained weights from PyTorch-format files (.pth/.pt/.bin, .safetensors, .npz).

The convention that makes one converter serve every model: Flax submodules are
named after the PyTorch modules they mirror, so a Flax variable path joined with
"." is the PyTorch state-dict key once the leaf is renamed (kernel/scale ->
weight, mean -> running_mean, var -> running_var). Flax names cannot hold ".",
so `_N` in a name stands for PyTorch's `.N` (`layer1_0` -> `layer1.0`, `convs_0_1`
-> `convs.0.1`: ModuleList and Sequential items);
purely numeric names ("0", "1") mirror nn.Sequential children. Where a file format uses other
names, the model class lists regex substitutions in a `torch_renames` class
attribute, applied in order to the joined Flax path; where tensors must be split or
merged (HuggingFace SegFormer), a static `adapt_state_dict(state) -> state` rewrites
the file's dict first.

Layouts: conv weights O,I,kh,kw -> kh,kw,I,O (depthwise: C,1,kh,kw -> kh,kw,1,C);
linear weights O,I -> I,O. A transposed convolution's weight (ConvTranspose2d: I,O,kh,kw)
-> kh,kw,I,O flipped in both spatial axes, the kernel that lax.conv_transpose (flax's
ConvTranspose with transpose_kernel=False) applies; flax's ConvTranspose with
transpose_kernel=True stores kh,kw,O,I unflipped, which is the ordinary conv conversion.
Shapes cannot tell these apart when I == O, so `transposed_kernels` finds the transposed
layers by tracing the model: flax's ConvTranspose, and any module class with
`torch_transposed = True` (jaxseg's ConvTranspose2x2, ConvTranspose3x3, BilinearUpsample).

Images of another channel count (data.channels): a file's 3-channel input conv loads into
the model's N-channel one by timm's rule (timm.models.adapt_input_conv): for 1 channel the
RGB kernels summed, otherwise repeated over the channels and scaled by 3 / N, so a
greyscale image repeated N times gives the pretrained response.
"""

from __future__ import annotations

import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_LEAVES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("params", "embedding"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a state dict as float32 numpy arrays keyed by PyTorch names.

    .pth/.pt/.bin need torch; .safetensors needs safetensors; .npz needs nothing.
    A checkpoint that wraps its weights in "state_dict" or "model" is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights: no such file {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path) as data:
            state = {k: data[k] for k in data.files}
    elif suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as e:
            raise ImportError(
                f"{path}: reading .safetensors needs `pip install safetensors`"
            ) from e
        state = load_file(str(path))
    elif suffix in (".pth", ".pt", ".bin"):
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"{path}: reading {suffix} needs torch; install it, or convert the file to "
                ".safetensors or .npz on a machine that has it"
            ) from e
        state = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
        state = {k: v.float().numpy() for k, v in state.items() if hasattr(v, "numpy")}
    else:
        raise ValueError(
            f"{path}: unknown weights format {suffix!r}; use .pth, .safetensors or .npz"
        )
    return {k: np.asarray(v, np.float32) for k, v in state.items() if np.ndim(v) > 0}


def torch_key(path: tuple[str, ...], renames=()) -> str:
    """('params', 'backbone', 'conv1', 'kernel') -> 'backbone.conv1.weight'."""
    collection, *names, leaf = path
    names = [re.sub(r"_(\d+)(?=_|$)", r".\1", n) for n in names]
    key = ".".join([*names, _LEAVES.get((collection, leaf), leaf)])
    for pattern, replacement in renames:
        key = re.sub(pattern, replacement, key)
    return key


def _is_transposed(module: nn.Module) -> bool:
    if isinstance(module, nn.ConvTranspose):
        return not module.transpose_kernel
    return bool(getattr(type(module), "torch_transposed", False))


def transposed_kernels(model: nn.Module, image_shape=(224, 224, 3)) -> frozenset:
    """Variable paths ("params", *module names, "kernel") of the kernels that `model`
    applies as transposed convolutions in lax's layout, found by tracing (shapes only) its
    init on one image of `image_shape` (H, W, C)."""
    found = set()

    def record(call, args, kwargs, context):
        if context.method_name == "__call__" and _is_transposed(context.module):
            found.add(("params", *context.module.path, "kernel"))
        return call(*args, **kwargs)

    x = jnp.zeros((1, *image_shape), jnp.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    return frozenset(found)


def _to_flax(array: np.ndarray, leaf: str, transposed: bool = False) -> np.ndarray:
    if transposed:  # ConvTranspose2d: I,O,kh,kw -> kh,kw,I,O, flipped
        return array.transpose(2, 3, 0, 1)[::-1, ::-1]
    if leaf == "kernel" and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    if leaf == "kernel" and array.ndim == 2:
        return array.T
    return array


def adapt_input_conv(kernel: np.ndarray, channels: int) -> np.ndarray:
    """A 3-channel input conv kernel f32[kh,kw,3,O] for `channels` input channels,
    f32[kh,kw,channels,O], by timm's adapt_input_conv: 1 channel sums the three; more repeat
    them (R, G, B, R, ...) and scale by 3 / channels."""
    if kernel.ndim != 4 or kernel.shape[2] != 3:
        raise ValueError(f"adapt_input_conv takes a [kh,kw,3,O] kernel, got {kernel.shape}")
    if channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    repeats = -(-channels // 3)
    return np.tile(kernel, (1, 1, repeats, 1))[:, :, :channels] * np.float32(3.0 / channels)


def convert_state_dict(
    variables: dict,
    state: dict[str, np.ndarray],
    renames=(),
    transposed=frozenset(),
    in_channels: int = 3,
):
    """Fills `variables` ({"params", "batch_stats"}) from a PyTorch state dict.

    `transposed` holds the variable paths of transposed-convolution kernels
    (`transposed_kernels(model)`); their weights are converted from ConvTranspose2d's layout.
    in_channels: the model's image channels; a file's conv kernel with 3 input channels where
    the model's has in_channels (other than 3) is adapted (adapt_input_conv).

    A key missing from `state` is looked up without its "backbone." prefix too, so
    an ImageNet classification checkpoint loads into a segmentation backbone.
    Returns (variables, report); report lists "loaded", "missing" (left as they
    were), "mismatched" (shape differs, e.g. another class count; left as they
    were), "unused" state-dict keys and "adapted" (the loaded ones adapt_input_conv changed).
    """
    report = {"loaded": [], "missing": [], "mismatched": [], "unused": [], "adapted": []}
    used = set()

    def fill(path, leaf_value):
        names = tuple(str(getattr(p, "key", p)) for p in path)
        key = torch_key(names, renames)
        if key not in state and key.startswith("backbone."):
            key = key[len("backbone.") :] if key[len("backbone.") :] in state else key
        if key not in state:
            report["missing"].append(key)
            return leaf_value
        value = _to_flax(state[key], names[-1], names in transposed)
        used.add(key)
        stem = value.ndim == 4 and value.shape[2] == 3 and in_channels != 3
        if stem and leaf_value.shape == (*value.shape[:2], in_channels, value.shape[3]):
            value = adapt_input_conv(value, in_channels)
            report["adapted"].append(key)
        if value.shape != leaf_value.shape:
            report["mismatched"].append(f"{key}: file {value.shape}, model {leaf_value.shape}")
            return leaf_value
        report["loaded"].append(key)
        return np.asarray(value, dtype=leaf_value.dtype)

    out = jax.tree_util.tree_map_with_path(fill, dict(variables))
    report["unused"] = sorted(
        k for k in state if k not in used and not k.endswith("num_batches_tracked")
    )
    return out, report


def load_pretrained(
    model, variables: dict, path: str | Path, log=print, image_shape=(224, 224, 3)
) -> dict:
    """Returns `variables` with every matching tensor from the file at `path`.

    Raises when nothing matches (wrong file for this model); logs one line per
    category otherwise, so a partial load (backbone only, new classifier) is visible.
    `image_shape` (H, W, C) is one input the model accepts, for `transposed_kernels`.
    """
    state = read_state_dict(path)
    # A model may rewrite other layouts of its weights first (an ImageNet classifier's
    # keys, HuggingFace's split attention projections).
    adapt = getattr(type(model), "adapt_state_dict", None)
    if adapt is not None:
        state = adapt(state)
    renames = getattr(type(model), "torch_renames", ())
    transposed = transposed_kernels(model, image_shape)
    out, report = convert_state_dict(variables, state, renames, transposed, image_shape[-1])
    if not report["loaded"]:
        example = report["missing"][:3]
        raise ValueError(
            f"{path}: no tensor matches {type(model).__name__}; it expects keys such as "
            f"{example}, the file has {sorted(state)[:3]}"
        )
    log(f"pretrained {path}: loaded {len(report['loaded'])} tensors")
    if report["adapted"]:
        n = image_shape[-1]
        rule = "summed" if n == 1 else f"repeated and scaled by 3/{n}"
        log(
            f"pretrained {path}: input conv {', '.join(report['adapted'])} adapted from 3 to "
            f"{n} channels (timm's adapt_input_conv: {rule})"
        )
    for kind in ("missing", "mismatched", "unused"):
        if report[kind]:
            shown = ", ".join(report[kind][:5]) + (" ..." if len(report[kind]) > 5 else "")
            log(f"pretrained {path}: {len(report[kind])} {kind}: {shown}")
    return out
