"""Run configuration: every field, its default and a one-line comment, declared once.

Experiments (experiments/*.py) are Python files with `get_config(arg=None)` that start
from `base_config()` and override; they are loaded by path:

    python -m jaxseg.train --config experiments/unet.py:quick --config.optim.lr=0.01

`parse_args` turns such a command line into a locked ConfigDict. A mistyped key or a
value of the wrong type raises `ConfigError` with one line naming the key and the
closest valid keys; the entry points print that line and exit with status 2.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import json
import os
from collections.abc import Sequence

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """Every field the library reads, with its default."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # seeds parameter init, data order, augmentation and dropout
    c.total_steps = 2000  # optimizer steps in the whole run (the schedule spans them)
    c.batch_size = 16  # global batch, split over all devices of all processes
    c.eval_batch_size = 16  # global evaluation batch (the last one is padded)
    c.log_every = 50  # steps between train-metric lines in metrics.jsonl
    c.eval_every = 500  # steps between evaluations; 0 evaluates only at the end
    c.checkpoint_every = 500  # steps between asynchronous checkpoints; 0: only at the end
    c.keep_checkpoints = 3  # newest checkpoints kept (the best by val/miou is kept too)
    c.init_from = ""  # checkpoint dir (a run's workdir, its checkpoints/ or one step): weights only
    c.boundary_tolerance = 3  # pixels: width of the contour bands that boundary IoU compares
    c.calibration_bins = 15  # confidence bins of the expected calibration error
    # Compute dtype: float32, bfloat16, or auto (bfloat16 on accelerators, float32 on CPU);
    # params and optimizer state stay float32 either way.
    c.dtype = "float32"

    c.data = ml_collections.ConfigDict()
    c.data.name = "shapes"  # dataset, a key of jaxseg.data.DATASETS
    c.data.image_size = (128, 128)  # training crop (height, width)
    c.data.eval_size = (128, 128)  # evaluation size (height, width): generated, or padded to
    c.data.root = ""  # folder datasets: directory holding images/ and masks/
    c.data.class_names = ()  # folder: the K class names; mask values are indices into them
    c.data.value_map = ()  # folder: ((stored value, class), ...) for integer masks, e.g. 255 -> 1
    c.data.palette = ()  # folder: ((r, g, b), ...) colour of each class in RGB masks
    c.data.train_list = ""  # folder: file of train stems, relative to root ("": split_ratio)
    c.data.val_list = ""  # folder: file of validation stems, relative to root
    c.data.split_ratio = 0.8  # folder without lists: seeded share of stems used for training
    c.data.skip_bad = False  # folder: skip unreadable or invalid pairs (and report them)
    c.data.max_pixels = 89_478_485  # refuse images larger than this (decompression bombs)
    c.data.tfds_name = ""  # tfds: dataset name, e.g. oxford_iiit_pet (presets fill the rest)
    c.data.tfds_dir = ""  # tfds: data_dir holding the prepared dataset ("": TFDS default)
    c.data.train_split = ""  # tfds: train split name ("": the preset's)
    c.data.val_split = ""  # tfds: validation split name ("": the preset's)
    c.data.image_key = ""  # tfds: feature holding the image ("": the preset's)
    c.data.mask_key = ""  # tfds: feature holding the mask ("": the preset's)
    c.data.num_train = 10_000  # examples in the train split of generated data
    c.data.num_val = 200  # examples in the validation split of generated data
    c.data.scale_range = (1.0, 1.0)  # random rescale factor range before cropping, e.g. (0.5, 2.0)
    c.data.cat_max_ratio = 1.0  # redraw crops where one class covers more than this share
    c.data.hflip = True  # random horizontal flip in training
    c.data.vflip = False  # random vertical flip in training
    c.data.rot90 = False  # random 90-degree rotations in training (180 only for non-square crops)
    c.data.photometric = False  # random brightness, contrast, saturation and hue (mmseg's)
    c.data.blur_prob = 0.0  # probability of a random Gaussian blur
    c.data.eval_shorter_side = 0  # resize evaluation images to this shorter side; 0: own size
    c.data.invalid_to_ignore = False  # mask values that are no class become ignore, not an error
    c.data.num_workers = 0  # grain worker processes (0 reads in the main process)
    c.data.read_threads = 4  # threads reading and transforming examples in each process
    c.data.prefetch = 2  # batches each worker process reads ahead
    c.data.ignore_index = 255  # mask value that contributes no loss and no metric
    c.data.mean = (0.485, 0.456, 0.406)  # per-channel mean of images scaled to [0, 1]
    c.data.std = (0.229, 0.224, 0.225)  # per-channel std of images scaled to [0, 1]

    c.model = ml_collections.ConfigDict()
    c.model.name = "unet"  # architecture, a key of jaxseg.models.MODELS
    c.model.base_width = 64  # channels of the first level; doubles at every level
    c.model.depth = 4  # down-sampling steps (input sides are padded to a multiple of 2**depth)
    c.model.up_mode = "transpose"  # unet up path: transpose (2x2 conv) or bilinear (+ 1x1 conv)
    # Encoder: resnet50|resnet101 (fcn, deeplabv3, deeplabv3plus, pspnet), mobilenet_v3_large
    # (deeplabv3, lraspp), mit_b0..mit_b5 (segformer).
    c.model.backbone = "resnet50"
    # Feature stride: 8 or 16 for dilated ResNets; 32, 16 or 8 for fcn_vgg16 (FCN-32s/16s/8s).
    c.model.output_stride = 16
    c.model.multi_grid = ()  # last-stage dilation multipliers, e.g. (1, 2, 4); (): torchvision's
    c.model.separable = False  # deeplabv3plus: depthwise-separable ASPP and decoder convolutions
    c.model.aux_head = False  # FCN auxiliary head on stage 3 (fcn, deeplabv3, pspnet), aux "aux"
    c.model.pretrained = ""  # PyTorch-format weights (.pth, .safetensors, .npz) to start from
    c.model.atrous_impl = "plain"  # dilated convs: plain or space_to_batch (same function)
    # 2x2 stride-2 transposed convs: depth_to_space or plain (same function); depth_to_space
    # halved the U-Net train step on CPU (docs/benchmarks.md), its gradient has no scatter.
    c.model.transpose_impl = "depth_to_space"
    c.model.unpool_impl = "mask_repeat"  # segnet max-unpooling: mask_repeat or scatter

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "sgd"  # sgd (momentum) or adamw
    c.optim.lr = 0.01  # peak learning rate, reached after warmup
    c.optim.schedule = "poly"  # poly (power poly_power), cosine or constant, after warmup
    c.optim.warmup_steps = 0  # linear warmup from 0 to lr
    c.optim.poly_power = 0.9  # exponent of the poly decay
    c.optim.end_lr = 0.0  # learning rate at the last step (poly and cosine)
    c.optim.momentum = 0.9  # sgd momentum
    c.optim.nesterov = False  # sgd Nesterov momentum
    c.optim.b1 = 0.9  # adamw beta1
    c.optim.b2 = 0.999  # adamw beta2
    c.optim.weight_decay = 1e-4  # decoupled for adamw, L2 for sgd; never on BatchNorm or biases
    c.optim.grad_clip = 0.0  # clip the global gradient norm to this value; 0 disables

    c.loss = ml_collections.ConfigDict()
    c.loss.terms = (("ce", 1.0),)  # (name, weight) pairs summed; names: jaxseg.losses.LOSSES
    c.loss.aux_weights = ()  # (aux output name, weight): auxiliary heads' loss, e.g. 0.4
    c.loss.class_weights = ()  # per-class weights for ce/ohem/topk; () weighs classes equally
    c.loss.class_weight_method = ""  # inverse, median or enet: from the train split (cached)
    c.loss.label_smoothing = 0.0  # ce: mass spread uniformly over all classes
    c.lock()  # experiments override fields; they cannot add new ones
    return c


class ConfigError(ValueError):
    """A config file or override is wrong; the message is one line meant for the user."""


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads `path.py` or `path.py:arg` by calling the file's get_config([arg])."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found")
    module_spec = importlib.util.spec_from_file_location(f"jaxseg_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} defines no get_config()")
    config = module.get_config(arg) if arg else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, not ConfigDict")
    return config


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Dotted names of every leaf field, e.g. ["seed", "optim.lr", ...]."""
    keys = []
    for name, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys += flat_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _unknown_key(config: ml_collections.ConfigDict, key: str) -> ConfigError:
    keys = flat_keys(config)
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    if not close:  # fall back on the fields of the same section
        section = key.rpartition(".")[0]
        close = [k for k in keys if k.rpartition(".")[0] == section][:5]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _coerce(key: str, old, text: str):
    """Parses `text` to the type of the field's current value `old`."""
    if isinstance(old, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if old is None:
            return text
        raise ConfigError(
            f"config key {key!r} needs a {type(old).__name__} like {old!r}, got {text!r}"
        ) from None
    if old is None:
        return value
    if isinstance(old, bool):
        ok = isinstance(value, bool)
    elif isinstance(old, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(old, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(old, tuple | list):
        ok = isinstance(value, tuple | list)
        value = type(old)(value) if ok else value
    else:
        ok = isinstance(value, type(old))
    if not ok:
        raise ConfigError(
            f"config key {key!r} needs a {type(old).__name__} like {old!r}, got {text!r}"
        )
    return value


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Sets config[key] (dotted) from command-line text, checking the key and the type."""
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise _unknown_key(config, key)
        node = node[part]
    if leaf not in node or isinstance(node[leaf], ml_collections.ConfigDict):
        raise _unknown_key(config, key)
    with node.unlocked():
        node[leaf] = _coerce(key, node[leaf], text)


@dataclasses.dataclass
class Args:
    config: ml_collections.ConfigDict
    config_spec: str
    workdir: str
    extra: list[str]


def parse_args(argv: Sequence[str], *, need_workdir: bool = False) -> Args:
    """Parses `--config PATH[:ARG]`, `--config.a.b=V` overrides and `--workdir DIR`.

    Other `--name=value` arguments are returned in `extra` for the entry point.
    The default workdir is runs/<config file stem>[_<arg>].
    """
    spec, workdir, overrides, extra = None, None, [], []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in ("--config", "--workdir") and not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"{name} needs a value")
            value, i = args[i + 1], i + 1
        if name == "--config":
            spec = value
        elif name == "--workdir":
            workdir = value
        elif name.startswith("--config."):
            if not eq:
                if i + 1 >= len(args) or args[i + 1].startswith("--"):
                    raise ConfigError(f"{name} needs a value: {name}=VALUE")
                value, i = args[i + 1], i + 1
            overrides.append((name[len("--config.") :], value))
        else:
            extra.append(arg)
        i += 1
    if spec is None:
        raise ConfigError(
            "--config PATH[:ARG] is required, e.g. --config experiments/unet.py:quick"
        )
    config = load_config_file(spec)
    for key, value in overrides:
        apply_override(config, key, value)
    config.lock()
    if workdir is None:
        if need_workdir:
            raise ConfigError("--workdir DIR is required")
        path, _, arg = spec.partition(":")
        stem = os.path.splitext(os.path.basename(path))[0]
        workdir = os.path.join("runs", f"{stem}_{arg}" if arg else stem)
    return Args(config=config, config_spec=spec, workdir=workdir, extra=extra)


def augment_options(data: ml_collections.ConfigDict) -> dict:
    """The training-augmentation keyword arguments of jaxseg.data.pipeline.train_iterator."""
    return {
        "crop_size": tuple(data.image_size),
        "scale_range": tuple(data.scale_range),
        "cat_max_ratio": data.cat_max_ratio,
        "hflip": data.hflip,
        "vflip": data.vflip,
        "rot90": data.rot90,
        "photometric": data.photometric,
        "blur_prob": data.blur_prob,
    }


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def compute_dtype(name: str) -> str:
    """config.dtype -> "float32" | "bfloat16"; "auto" picks bfloat16 off the CPU."""
    if name == "auto":
        import jax  # here, not at import: jax.distributed must initialise first

        return "float32" if jax.default_backend() == "cpu" else "bfloat16"
    if name not in ("float32", "bfloat16"):
        raise ConfigError(f"dtype: {name!r} is not one of float32, bfloat16, auto")
    return name


def cpu_quick(c: ml_collections.ConfigDict, *, steps: int, size: int = 64, batch: int = 8):
    """The `:quick` smoke settings the experiments share: a few minutes on 2 CPU cores,
    `steps` AdamW steps on size x size `shapes` crops, two evaluations on 100 images."""
    c.total_steps = steps
    c.batch_size = batch
    c.eval_batch_size = 20
    c.data.image_size = (size, size)
    c.data.eval_size = (size, size)
    c.data.num_val = 100
    c.data.scale_range = (1.0, 1.0)
    c.optim.name = "adamw"
    c.optim.lr = 1e-3
    c.optim.weight_decay = 1e-4
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = steps // 10
    c.log_every = 25
    c.eval_every = steps // 2
    c.checkpoint_every = steps // 2
    c.dtype = "float32"
    return c


def sgd_512(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The schedule the CNN recipes share (mmseg/torchvision style): 512x512 crops of
    images rescaled by 0.5-2.0, SGD lr 0.01 (momentum and weight decay as base_config)
    with poly decay over 40k steps, bfloat16 on accelerators."""
    c.data.image_size = (512, 512)
    c.data.eval_size = (512, 512)
    c.data.scale_range = (0.5, 2.0)
    c.total_steps = 40_000
    c.eval_every = 4000
    c.checkpoint_every = 2000
    c.optim.name = "sgd"
    c.optim.lr = 0.01
    c.optim.schedule = "poly"
    c.dtype = "auto"
    return c
