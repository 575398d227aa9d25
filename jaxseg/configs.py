"""Run configuration: every field, its default and a one-line comment, declared once; and
the command-line layer every entry point shares.

Experiments (experiments/*.py) are Python files with `get_config(arg=None)` that start
from `base_config()` and override; they are loaded by path with ml_collections'
config_flags, and any field is overridden with a dotted absl flag:

    python -m jaxseg.train --config experiments/unet.py:quick --config.optim.lr=0.01

`parse_flags` parses an entry's absl flags: `--help` lists them; a mistyped key, a value of
the wrong type or a missing file ends in one line on stderr naming the key or file, and
exit status 2. A run's resolved config is saved as JSON and read back with `from_json`
(tuples restored, every key and type checked against base_config; no Python executed).
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags


def base_config() -> ml_collections.ConfigDict:
    """Every field the library reads, with its default."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # seeds parameter init, data order, augmentation and dropout
    c.total_steps = 2000  # optimizer steps in the whole run (the schedule spans them)
    c.batch_size = 16  # global batch, split over all devices of all processes
    c.log_every = 50  # steps between train-metric lines in metrics.jsonl
    c.eval_every = 500  # steps between evaluations; 0 evaluates only at the end
    c.checkpoint_every = 500  # steps between asynchronous checkpoints; 0: only at the end
    c.keep_checkpoints = 3  # newest checkpoints kept (the best by val/miou is kept too)
    c.init_from = ""  # checkpoint dir (a run's workdir, its checkpoints/ or one step): weights only
    # Compute dtype: float32, bfloat16, or auto (bfloat16 on accelerators, float32 on CPU);
    # params and optimizer state stay float32 either way.
    c.dtype = "float32"

    c.data = ml_collections.ConfigDict()
    c.data.name = "shapes"  # dataset, a key of jaxseg.data.DATASETS
    c.data.image_size = (128, 128)  # training crop (height, width)
    c.data.root = ""  # folder datasets: directory holding images/ and masks/
    c.data.class_names = ()  # folder: the K class names; mask values are indices into them
    c.data.value_map = ()  # folder: ((stored value, class), ...) for integer masks, e.g. 255 -> 1
    c.data.palette = ()  # folder: ((r, g, b), ...) colour of each class in RGB masks
    c.data.train_list = ""  # folder: file of train stems, relative to root ("": split_ratio)
    c.data.val_list = ""  # folder: file of validation stems, relative to root
    c.data.test_list = ""  # folder: file of test stems, relative to root ("": no test split)
    c.data.split_ratio = 0.8  # folder without lists: seeded share of stems used for training
    c.data.skip_bad = False  # folder: skip unreadable or invalid pairs (and report them)
    c.data.max_pixels = 89_478_485  # refuse images larger than this (decompression bombs)
    c.data.tfds_name = ""  # tfds: dataset name, e.g. oxford_iiit_pet (presets fill the rest)
    c.data.tfds_dir = ""  # tfds: data_dir holding the prepared dataset ("": TFDS default)
    c.data.train_split = ""  # tfds: train split name ("": the preset's)
    c.data.val_split = ""  # tfds: validation split name ("": the preset's)
    c.data.test_split = ""  # tfds: test split name ("": the preset's, if it has one)
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
    c.data.elastic_sigma = 0.0  # elastic deformation (U-Net paper): displacement std in pixels
    c.data.elastic_grid = 3  # elastic deformation: random displacements on a grid x grid lattice
    c.data.augment_on = "host"  # "host": grain workers augment; "device": in the train step
    c.data.canvas_size = ()  # augment_on=device: (H, W) images are padded to; (): the first one's
    c.data.repeat_threshold = 0.0  # class-balanced sampling: images holding classes seen in
    #   fewer than this share of training images are drawn more often (LVIS repeat factors)
    c.data.invalid_to_ignore = False  # mask values that are no class become ignore, not an error
    c.data.num_workers = -1  # grain worker processes; 0: threads of the main process; -1: auto
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
    # Encoder ("": the model's own: resnet50, or mit_b0 for segformer): resnet18|resnet34|
    # resnet50|resnet101 (fcn, deeplabv3, deeplabv3plus, pspnet, deeplabv2 whose own is
    # resnet101, semantic_fpn 50|101), mobilenet_v3_large (deeplabv3), mit_b0..mit_b5,
    # vit_b16|vit_l16 (setr, own vit_l16; transunet vit_b16; vit_ti16 for tests),
    # swin_t|swin_b (swin_unet, own swin_t); resnet18|resnet34|xception39 (bisenetv1, own
    # resnet18).
    c.model.backbone = ""
    c.model.decoder = ""  # setr: naive, pup or mla ("": pup)
    # ViT models (setr, transunet): image side the position embeddings are stored for (0: the
    # model's own, 224); other input sizes resize them bicubically. A pretrained file's grid
    # must match it (timm's *_384 files: 384).
    c.model.pretrain_size = 0
    # Feature stride (0: the model's own: deeplabv3 8, deeplabv3plus 16, fcn_vgg16 8): 8 or 16
    # for dilated ResNets; 32, 16 or 8 for fcn_vgg16 (FCN-32s/16s/8s).
    c.model.output_stride = 0
    c.model.multi_grid = ()  # last-stage dilation multipliers, e.g. (1, 2, 4); (): torchvision's
    c.model.separable = False  # deeplabv3plus: depthwise-separable ASPP and decoder convolutions
    # Auxiliary heads: FCN head on stage 3 (fcn, deeplabv3, deeplabv3plus, pspnet), aux "aux";
    # setr "aux0".."aux2" (naive, pup) or "aux0".."aux3" (mla);
    # bisenetv1 "context16"/"context8"; bisenetv2 boosters "stem", "s3", "s4", "s5".
    c.model.aux_head = False
    c.model.pretrained = ""  # PyTorch-format weights (.pth, .safetensors, .npz) to start from
    c.model.atrous_impl = "plain"  # dilated convs: plain or space_to_batch (same function)
    # 2x2 stride-2 transposed convs: depth_to_space or plain (same function); depth_to_space
    # halved the U-Net train step on CPU (docs/benchmarks.md), its gradient has no scatter.
    c.model.transpose_impl = "depth_to_space"
    c.model.unpool_impl = "mask_repeat"  # segnet max-unpooling: mask_repeat or scatter
    # Variant of a model family ("": the model's own): fc_densenet 56|67|103 (103), espnet
    # espnet|espnet_c (espnet), dfanet A|B (A).
    c.model.variant = ""

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
    # Non-finite steps skipped in a row (no update, BatchNorm statistics kept) before the run
    # stops; 0 stops at the first. Skips are logged as train/skipped.
    c.optim.skip_nonfinite = 0
    # Gradient accumulation (optax.MultiSteps): one update every accumulate_steps train steps,
    # from the mean of their gradients, so the effective batch is batch_size * accumulate_steps.
    # total_steps, warmup_steps and every cadence count train steps (batches); the schedule
    # advances once per update. BatchNorm statistics still update on every batch.
    c.optim.accumulate_steps = 1
    # Learning-rate multiplier of every parameter outside the model's "backbone" (the heads;
    # SETR's recipe: 10). Only models with a backbone/head split take it.
    c.optim.head_lr_mult = 1.0

    c.loss = ml_collections.ConfigDict()
    c.loss.terms = (("ce", 1.0),)  # (name, weight) pairs summed; names: jaxseg.losses.LOSSES
    c.loss.aux_weights = ()  # (aux output name, weight): auxiliary heads' loss, e.g. 0.4
    c.loss.class_weights = ()  # per-class weights of the ce/ohem/topk terms; (): all equal
    c.loss.class_weight_method = ""  # inverse, median or enet: from the train split (cached)
    c.loss.label_smoothing = 0.0  # ce: mass spread uniformly over all classes
    # Options of the losses in terms, by loss name, checked against each loss's keywords:
    # e.g. (("ohem", (("thresh", 0.7), ("min_kept", 100000))), ("focal", (("gamma", 1.0),)))
    c.loss.options = ()
    # Evaluation and inference: training's periodic evaluation, jaxseg.evaluate, predict and
    # export all go through jaxseg.inference with these settings.
    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 16  # global evaluation batch (images; the last batch is padded)
    c.eval.size = (128, 128)  # (height, width) evaluation images are padded to (shapes: made at)
    c.eval.shorter_side = 0  # resize evaluation images to this shorter side first; 0: own size
    c.eval.mode = "whole"  # whole: each image in one pass; slide: crop_size windows every stride
    c.eval.crop_size = ()  # slide: window (height, width); (): the training crop data.image_size
    c.eval.stride = ()  # slide: window step (height, width); (): two thirds of crop_size
    c.eval.window_batch = 0  # slide: windows per forward pass (fixed per compile); 0: batch_size
    c.eval.scales = (1.0,)  # test-time scales; several (or flip) average softmax over the views
    c.eval.flip = False  # test-time horizontal flip, averaged with the unflipped views
    c.eval.boundary_tolerance = 3  # pixels: width of the contour bands that boundary IoU compares
    c.eval.calibration_bins = 15  # confidence bins of the expected calibration error
    # Dense CRF (jaxseg.crf, DeepLab v1/v2's post-processing): the final probabilities refined
    # by mean field with the image. The parameter defaults are DeepLab-LargeFOV's on PASCAL VOC
    # (Chen et al., ICLR 2015, as its released test settings are widely quoted: bilateral
    # weight 4, xy 121, rgb 5; spatial weight 3, xy 3; 10 iterations); membrane figures with
    # other values are in docs/benchmarks.md. They act only with eval.crf=True.
    c.eval.crf = False  # refine predictions with the dense CRF (evaluate, predict, export)
    c.eval.crf_bilateral_weight = 4.0  # w of the appearance kernel (position and colour)
    c.eval.crf_bilateral_xy_std = 121.0  # its position deviation, pixels
    c.eval.crf_bilateral_rgb_std = 5.0  # its colour deviation, 0..255 RGB units
    c.eval.crf_spatial_weight = 3.0  # w of the smoothness kernel (position only)
    c.eval.crf_spatial_xy_std = 3.0  # its position deviation, pixels
    c.eval.crf_iterations = 10  # mean-field iterations
    # Odd side of the neighbourhood where the pairwise sum is exact (pixels beyond it are left
    # out, as in convolutional CRFs); memory grows as window^2 x the batch's pixels.
    c.eval.crf_window = 11
    c.lock()  # experiments override fields; they cannot add new ones
    return c


class ConfigError(ValueError):
    """A config file, override or flag is wrong; the message is one line meant for the user."""


# Tuple fields whose elements and length the command line cannot get wrong silently:
# key -> (element type, allowed lengths or None for any).
_TUPLE_FIELDS = {
    "data.image_size": (int, (2,)),
    "data.scale_range": (float, (2,)),
    "data.canvas_size": (int, (0, 2)),
    "data.mean": (float, (3,)),
    "data.std": (float, (3,)),
    "eval.size": (int, (2,)),
    "eval.crop_size": (int, (0, 2)),
    "eval.stride": (int, (0, 2)),
    "eval.scales": (float, None),
    "model.multi_grid": (int, None),
    "loss.class_weights": (float, None),
}


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Dotted names of every leaf field, e.g. ["seed", "optim.lr", ...]."""
    keys = []
    for name, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys += flat_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def flat_items(config: ml_collections.ConfigDict) -> dict:
    """{dotted key: value} of every leaf field."""
    out = {}
    for key in flat_keys(config):
        node = config
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def unknown_key(key: str) -> ConfigError:
    """The error for a key base_config() does not have, naming the closest valid ones."""
    keys = flat_keys(base_config())
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    if not close:  # fall back on the fields of the same section
        section = key.rpartition(".")[0]
        close = [k for k in keys if k.rpartition(".")[0] == section][:5]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _type_name(value) -> str:
    return type(value).__name__


def check_types(config: ml_collections.ConfigDict) -> None:
    """Every field has base_config()'s type (ints accepted for floats), and the sized
    tuples (image sizes, crops, mean/std, scales) have the right length and element type."""
    defaults = flat_items(base_config())
    for key, value in flat_items(config).items():
        if key not in defaults:
            raise unknown_key(key)
        default = defaults[key]
        ok = isinstance(value, type(default))
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) and isinstance(default, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float)
        if not ok:
            raise ConfigError(
                f"config key {key!r} needs a {_type_name(default)} like {default!r}, got {value!r}"
            )
        if key in _TUPLE_FIELDS:
            kind, lengths = _TUPLE_FIELDS[key]
            kinds = (int, float) if kind is float else (int,)
            good = all(isinstance(v, kinds) and not isinstance(v, bool) for v in value)
            if not good or (lengths and len(value) not in lengths):
                size = " or ".join(map(str, lengths or ())) or "any number of"
                raise ConfigError(
                    f"config key {key!r} needs {size} {kind.__name__}s like {default!r}"
                    f"{' or ()' if lengths and 0 in lengths else ''}, got {value!r}"
                )


# ---------------------------------------------------------------------------------- JSON


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def from_json(text: str, where: str = "config.json") -> ml_collections.ConfigDict:
    """A locked config from to_json's text: base_config() with every saved field set, JSON
    lists back to tuples. Unknown keys or wrong types raise ConfigError naming `where`."""
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where} is not valid JSON: {e}") from None
    config = base_config()

    def fill(node: ml_collections.ConfigDict, values: dict, prefix: str) -> None:
        for name, value in values.items():
            key = prefix + name
            if name not in node:
                raise ConfigError(f"{where}: {unknown_key(key)}")
            if isinstance(node[name], ml_collections.ConfigDict):
                if not isinstance(value, dict):
                    raise ConfigError(f"{where}: {key} must be a section, got {value!r}")
                fill(node[name], value, key + ".")
            else:
                with node.ignore_type():
                    node[name] = _tuples(value)

    fill(config, saved, "")
    try:
        check_types(config)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    config.lock()
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
    """Sets {dotted key: value} in config (already parsed and typed by the flag layer)."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value


# ------------------------------------------------------------------------ command lines


def define_config_file(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    """--config FILE[:ARG] (an experiment) with --config.a.b=VALUE overrides, into fv."""
    config_flags.DEFINE_config_file(
        "config",
        None,
        "experiment file FILE[:ARG] whose get_config(ARG) returns the config; override any "
        "field of jaxseg.configs.base_config() with --config.a.b=VALUE",
        flag_values=fv,
        lock_config=True,
        sys_argv=["jaxseg", *argv],
    )


def define_config_overrides(fv: flags.FlagValues, argv: Sequence[str], what: str) -> None:
    """--config.a.b=VALUE overrides (typed against base_config()) without a config file:
    entries that read a run's saved config apply them on top with `overrides(fv)`."""
    config_flags.DEFINE_config_dict(
        "config",
        base_config(),
        f"--config.a.b=VALUE overrides {what} on top of the run's saved config.json",
        flag_values=fv,
        lock_config=True,
        sys_argv=["jaxseg", *argv],
    )


def _allows(allowed, key: str) -> bool:
    return key in allowed or key.split(".")[0] in allowed


def overrides(fv: flags.FlagValues, allowed: tuple[str, ...]) -> dict:
    """The --config.* overrides given on the command line, {dotted key: value}. `allowed`
    names the sections ("eval") or keys ("eval.mode") that act in this entry; any other key
    raises ConfigError naming it: it would not act, and silence would hide that."""
    values = dict(config_flags.get_override_values(fv["config"]))
    refused = [k for k in values if not _allows(allowed, k)]
    if refused:
        section = refused[0].split(".")[0]
        why = (
            f"a trained run's {section} section is fixed"
            if section not in {a.split(".")[0] for a in allowed}
            else "it does not act in this command"
        )
        raise ConfigError(
            f"--config.{refused[0]} cannot change here: {why}; this command takes "
            f"{', '.join(a if '.' in a else a + '.*' for a in allowed)}"
        )
    return values


def _message(error: BaseException, argv: Sequence[str]) -> str:
    """One line for the user from whatever the flag layer raised."""
    if isinstance(error, AttributeError | KeyError):  # an override names no field
        for arg in argv:
            name = arg.split("=", 1)[0].lstrip("-")
            if name.startswith("config."):
                key = name[len("config.") :]
                if key not in flat_keys(base_config()):
                    return str(unknown_key(key))
    text = str(error).strip()
    if "Traceback" in text:  # config_flags wraps a get_config error in its traceback
        text = text.splitlines()[-1]
    return " ".join(text.split())


def parse_flags(
    fv: flags.FlagValues, argv: Sequence[str], *, prog: str, doc: str, allowed=()
) -> list[str]:
    """Parses argv (without the program name) into fv and returns the positional arguments.

    `--help` (or -h, --helpfull) prints doc and every flag of fv (and the config fields
    `allowed` for --config.* overrides), then exits 0. Any mistake
    (unknown flag or config key, wrong type, missing config file, config file error) prints
    one line `prog: error: ...` on stderr and exits 2. The config, when fv has one, is
    type-checked against base_config().
    """
    if any(a in ("--help", "-h", "--helpfull", "-help") for a in argv):
        print(help_text(fv, doc, allowed))
        sys.exit(0)
    try:
        return parse(fv, argv)
    except ConfigError as e:
        fail(prog, str(e))


def help_text(fv: flags.FlagValues, doc: str, allowed=()) -> str:
    """The entry's docstring, its flags with defaults, and the overridable config fields."""
    lines = [doc.strip(), "", "flags:"]
    for name, flag in sorted(fv._flags().items()):  # noqa: SLF001 (absl has no public walk)
        if name != flag.name or name in ("flagfile", "undefok"):
            continue  # aliases and absl's own
        default = (
            "" if flag.default is None or name == "config" else f" (default: {flag.default_as_str})"
        )
        lines.append(f"  --{name}: {flag.help}{default}")
    if allowed:
        lines.append("")
        lines.append("config fields --config.KEY=VALUE may set (defaults of base_config):")
        for key, value in flat_items(base_config()).items():
            if _allows(allowed, key):
                lines.append(f"  --config.{key}  (default: {value!r})")
    return "\n".join(lines)


def parse(fv: flags.FlagValues, argv: Sequence[str]) -> list[str]:
    """parse_flags without the exits: raises ConfigError with the one-line message."""
    argv = list(argv)
    try:
        for i, arg in enumerate(argv):  # config_flags reports a missing file only on access
            if (arg == "--config" and i + 1 < len(argv)) or arg.startswith("--config="):
                spec = argv[i + 1] if arg == "--config" else arg.split("=", 1)[1]
                path = spec.split(":", 1)[0]
                if not os.path.isfile(path):
                    raise ConfigError(f"config file {path!r} not found")
        rest = fv(["jaxseg", *argv])[1:]
        if "config" in fv:
            config = fv["config"].value
            if config is None:
                raise ConfigError(
                    "--config FILE[:ARG] is required, e.g. --config experiments/unet.py:quick"
                )
            if not isinstance(config, ml_collections.ConfigDict):
                raise ConfigError(
                    f"--config: get_config() returned {type(config).__name__}, not ConfigDict"
                )
            check_types(config)
    except (flags.Error, ConfigError, AttributeError, KeyError, OSError, ValueError) as e:
        raise ConfigError(_message(e, argv)) from None
    return rest


def load_experiment(spec: str, *overrides: str) -> ml_collections.ConfigDict:
    """The locked config of experiment `spec` (FILE[:ARG]) with `--config.a.b=V` overrides,
    as the command line would build it (for notebooks and tests); raises ConfigError."""
    argv = ["--config", spec, *overrides]
    fv = flags.FlagValues()
    define_config_file(fv, argv)
    rest = parse(fv, argv)
    if rest:
        raise ConfigError(f"not overrides: {' '.join(rest)}")
    return fv.config


def fail(prog: str, message: str) -> None:
    """The user's mistake: one line on stderr, exit status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def default_workdir(fv: flags.FlagValues) -> str:
    """runs/<experiment stem>[_<arg>] for --config path/stem.py[:arg]."""
    path, _, arg = config_flags.get_config_filename(fv["config"]).partition(":")
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", f"{stem}_{arg}" if arg else stem)


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
    c.eval.batch_size = 20
    c.data.image_size = (size, size)
    c.eval.size = (size, size)
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
    c.eval.size = (512, 512)
    c.data.scale_range = (0.5, 2.0)
    c.total_steps = 40_000
    c.eval_every = 4000
    c.checkpoint_every = 2000
    c.optim.name = "sgd"
    c.optim.lr = 0.01
    c.optim.schedule = "poly"
    c.dtype = "auto"
    return c
