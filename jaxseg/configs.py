"""Run configuration: the generic sections declared once here with their defaults and a
one-line comment; the model's, the dataset's and each loss term's options taken from the
chosen part's own signature (jaxseg.registry), so an option the part does not take does
not exist in the config.

    c = base_config(model="deeplabv3plus", data="shapes")  # experiments start here
    c.model.backbone = "resnet18"                          # a field of DeepLabV3Plus
    c.data.num_val = 100                                   # a keyword of the shapes builder

Experiments (experiments/*.py) are Python files with `get_config(arg=None)` that start from
`base_config()` and override; jaxseg.cli loads them and applies `--config.a.b=VALUE`
overrides. A run's resolved config is saved as JSON and read back with `from_json` (tuples
restored, every key and type checked against the sections of its parts; no Python run).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import json

import ml_collections

from jaxseg import data as datasets
from jaxseg import losses, models
from jaxseg.crf import CRFParams
from jaxseg.data import augment_spec


class ConfigError(ValueError):
    """A config file, override or flag is wrong; the message is one line meant for the user."""


DEFAULT_LOSS = (("ce", 1.0),)


def base_config(
    model: str = "unet", data: str = "shapes", loss: tuple = DEFAULT_LOSS
) -> ml_collections.ConfigDict:
    """Every field the library reads, with its default; model, data and loss name the parts
    whose options make up the model, data and loss.<term> sections."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # seeds parameter init, data order, augmentation and dropout
    c.seeds = 1  # models side by side (jaxseg.seeds), replica i bit-equal to seed + i alone
    c.seeds_vmap = False  # seeds > 1 in one vmapped step: not bit-equal (1e-5 after 3 steps)
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

    c.mesh = ml_collections.ConfigDict()
    c.mesh.spatial = 1  # devices sharing each crop, its height split (1: data parallel only)

    c.model = model_section(model)
    c.data = data_section(data)

    # Training augmentation, image and mask together, on the host or in the train step: the
    # fields of jaxseg.data.augment_spec.AugmentSpec (their comments say what each does and
    # on which backend it acts), declared and defaulted there once.
    c.augment = ml_collections.ConfigDict(augment_spec.section_defaults())

    c.loader = ml_collections.ConfigDict()
    c.loader.num_workers = -1  # grain worker processes; 0: threads of the main process; -1: auto
    c.loader.read_threads = 4  # threads reading and transforming examples in each process
    c.loader.prefetch = 2  # batches each worker process reads ahead
    # Class-balanced sampling: images holding classes seen in fewer than this share of
    # training images are drawn more often (LVIS repeat factors); 0: uniform.
    c.loader.repeat_threshold = 0.0

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

    c.loss = loss_section(loss)

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
    # by mean field with the image; its options are jaxseg.crf.CRFParams's fields.
    c.eval.crf = ml_collections.ConfigDict()
    c.eval.crf.enabled = False  # refine predictions with the dense CRF (evaluate, predict, export)
    for name, default in crf_defaults().items():
        c.eval.crf[name] = default
    c.lock()  # experiments override fields; they cannot add new ones
    return c


def crf_defaults() -> dict:
    """{field: default} of jaxseg.crf.CRFParams."""
    return dataclasses.asdict(CRFParams())


def model_section(name: str) -> ml_collections.ConfigDict:
    """model.name plus the fields (and defaults) of MODELS[name] and the weights to load."""
    try:
        options = models.options(name)
    except KeyError:
        raise ConfigError(
            f"model.name={name!r} is unknown; valid: {', '.join(sorted(models.MODELS))}"
        ) from None
    s = ml_collections.ConfigDict({"name": name, **options})
    s.pretrained = ""  # PyTorch-format weights (.pth, .safetensors, .npz) to start from
    return s


# The data section's fields that every dataset has (the pipeline reads them).
DATA_COMMON = ("name", "image_size", "ignore_index", "invalid_to_ignore", "channels", "mean", "std")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def data_section(name: str) -> ml_collections.ConfigDict:
    """data.name, the pipeline's fields every dataset has, and the keyword options (and
    defaults) of DATASETS[name]'s builder."""
    try:
        options = datasets.options(name)
    except KeyError as e:
        raise ConfigError(f"data.name: {e.args[0]}") from None
    s = ml_collections.ConfigDict()
    s.name = name  # dataset, a name of jaxseg.data.DATASETS
    s.image_size = (128, 128)  # training crop (height, width)
    s.ignore_index = 255  # mask value that contributes no loss and no metric
    s.invalid_to_ignore = False  # mask values that are no class become ignore, not an error
    # 3: every image read as 8-bit RGB; another count: each file's own bands, 8 or 16 bit
    s.channels = 3
    # Per-channel mean and std of images scaled to [0, 1] (x / 255, 16-bit x / 65535);
    # (): computed from the train split once (cached in the workdir), as they are for a
    # channel count other than 3 left at these (RGB) defaults.
    s.mean = IMAGENET_MEAN
    s.std = IMAGENET_STD
    for key, value in options.items():
        s[key] = value
    return s


# The loss section's fields that do not depend on the terms.
LOSS_COMMON = ("terms", "aux_weights", "class_weights", "class_weight_method")


def loss_terms(terms) -> tuple[tuple[str, float], ...]:
    """loss.terms checked: (name, weight) pairs of distinct registered losses."""
    if not isinstance(terms, tuple | list) or not terms:
        raise ConfigError(f"loss.terms={terms!r} is not ((loss name, weight), ...)")
    for entry in terms:
        ok = isinstance(entry, tuple | list) and len(entry) == 2 and isinstance(entry[0], str)
        if not ok or isinstance(entry[1], bool) or not isinstance(entry[1], int | float):
            raise ConfigError(f"loss.terms entry {entry!r} is not (loss name, weight)")
    names = [name for name, _ in terms]
    unknown = sorted(set(names) - set(losses.LOSSES))
    if unknown:
        raise ConfigError(f"loss.terms names {unknown}; valid: {', '.join(sorted(losses.LOSSES))}")
    if len(set(names)) < len(names):
        raise ConfigError(f"loss.terms names a loss twice: {tuple(names)}")
    return tuple((str(name), float(w)) for name, w in terms)


def loss_section(terms) -> ml_collections.ConfigDict:
    """loss.terms, the terms-independent fields, and one loss.<name> section per term with
    that loss's keyword options (those that have any), e.g. loss.ohem.thresh."""
    terms = loss_terms(terms)
    s = ml_collections.ConfigDict()
    s.terms = terms  # (name, weight) pairs summed; names: jaxseg.losses.LOSSES
    s.aux_weights = ()  # (aux output name, weight): auxiliary heads' loss, e.g. 0.4
    s.class_weights = ()  # per-class weights of the terms that take them; (): all equal
    s.class_weight_method = ""  # inverse, median or enet: from the train split (cached)
    for name, _ in terms:
        options = losses.options(name)
        if options:
            s[name] = ml_collections.ConfigDict(options)
    return s


# ------------------------------------------------------------- another part for a section


def _carry(new, old, old_defaults, skip=()) -> None:
    """Copies into section `new` the values of `old` that the experiment set (they differ
    from the old part's defaults) and that the new part takes with the same type."""
    for key in new:
        if key in skip or key not in old or old[key] == old_defaults.get(key, old[key]):
            continue
        with contextlib.suppress(TypeError):  # the name means something else to the new part
            new[key] = old[key]


def rebuild(
    config: ml_collections.ConfigDict, *, model=None, data=None, terms=None
) -> ml_collections.ConfigDict:
    """A copy of config (locked) with the model, data or loss sections built for another
    model, dataset or loss.terms: the settings of the old section that the new part also
    takes are kept, nothing else of the old part is left."""
    c = copy.deepcopy(config)
    c.unlock()
    if model is not None and model != c.model.name:
        new = model_section(model)
        _carry(new, c.model, model_section(c.model.name), skip=("name",))
        new.pretrained = c.model.pretrained
        c.model = new
    if data is not None and data != c.data.name:
        new = data_section(data)
        _carry(new, c.data, data_section(c.data.name), skip=("name",))
        for key in DATA_COMMON[1:]:
            new[key] = c.data[key]
        c.data = new
    if terms is not None:
        new = loss_section(terms)
        for key in LOSS_COMMON[1:]:
            new[key] = c.loss[key]
        for name in new:
            if name not in LOSS_COMMON and name in c.loss:
                _carry(new[name], c.loss[name], {})
        c.loss = new
    c.lock()
    return c


def for_parts(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """base_config() built for config's model, dataset and loss terms (its defaults)."""
    return base_config(config.model.name, config.data.name, tuple(config.loss.terms))


# -------------------------------------------------------------------------- checking


# Tuple fields whose elements and length the command line cannot get wrong silently:
# key -> (element type, allowed lengths or None for any).
_TUPLE_FIELDS = {
    "data.image_size": (int, (2,)),
    "augment.scale_range": (float, (2,)),
    "augment.canvas_size": (int, (0, 2)),
    "data.mean": (float, None),
    "data.std": (float, None),
    "eval.size": (int, (2,)),
    "eval.crop_size": (int, (0, 2)),
    "eval.stride": (int, (0, 2)),
    "eval.scales": (float, None),
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


PART_OF = {"model": ("model", "name"), "data": ("dataset", "name")}


def unknown_key(key: str, config: ml_collections.ConfigDict) -> ConfigError:
    """The error for a key config does not have: which part does not take it, and the
    closest valid keys."""
    keys = flat_keys(config)
    section = key.split(".")[0]
    why = ""
    if section in PART_OF and section in config and "." in key:
        kind, field = PART_OF[section]
        name = config[section][field]
        built = model_section if section == "model" else data_section
        try:
            stale = set(config[section]) != set(built(name))
        except ConfigError:
            stale = False
        why = f": {kind} {name!r} does not take it"
        if stale:  # an experiment set model.name = ... on a section built for another part
            why = (
                f": the {section} section was built for another {kind} than {name!r}; start "
                f"from base_config({section}={name!r})"
            )
    elif section == "loss" and key.count(".") >= 1 and key.split(".")[1] in losses.LOSSES:
        term = key.split(".")[1]
        why = f": loss {term!r} does not take it"
        if term not in config.loss:
            why = f": {term!r} is not in loss.terms {tuple(n for n, _ in config.loss.terms)}"
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    if not close:  # fall back on the fields of the same section
        close = [k for k in keys if k.rpartition(".")[0] == key.rpartition(".")[0]][:6]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{why}{hint}")


def _type_name(value) -> str:
    return type(value).__name__


def check_types(config: ml_collections.ConfigDict) -> None:
    """Every field exists for config's parts and has its default's type (ints accepted for
    floats; a placeholder's type when the default is None), and the sized tuples (image
    sizes, crops, mean/std, scales) have the right length and element type."""
    defaults_config = for_parts(config)
    defaults = flat_items(defaults_config)
    values = flat_items(config)
    for key, value in values.items():
        if key not in defaults:
            raise unknown_key(key, defaults_config)
        default = defaults[key]
        if default is None or value is None:
            continue  # typed placeholders: ConfigDict checks the type on assignment
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
    missing = [k for k in defaults if k not in values]
    if missing:
        raise ConfigError(f"config key {missing[0]!r} is missing")
    _check_channel_stats(config.data)


def _check_channel_stats(data) -> None:
    """data.channels >= 1, and data.mean and data.std with one value a channel, or none (to
    compute), or left at the RGB defaults (also computed, for a count other than 3)."""
    if data.channels < 1:
        raise ConfigError(f"data.channels={data.channels} needs 1 or more")
    for key in ("mean", "std"):
        count = len(data[key])
        if count not in (0, data.channels) and not stats_left_at_default(data, key):
            raise ConfigError(
                f"data.{key} has {count} values for data.channels={data.channels}; give one "
                f"per channel, or () to compute them from the train split"
            )


def stats_left_at_default(data, key: str) -> bool:
    """Whether data.mean or data.std (key) is the RGB (ImageNet) default."""
    default = IMAGENET_MEAN if key == "mean" else IMAGENET_STD
    return tuple(float(v) for v in data[key]) == default


# ---------------------------------------------------------------------------------- JSON


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def from_json(text: str, where: str = "config.json") -> ml_collections.ConfigDict:
    """A locked config from to_json's text: base_config() for its parts with every saved
    field set, JSON lists back to tuples. Unknown keys or wrong types raise ConfigError
    naming `where`."""
    try:
        saved = json.loads(text)
        parts = saved["model"]["name"], saved["data"]["name"], _tuples(saved["loss"]["terms"])
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where} is not valid JSON: {e}") from None
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{where} names no model, dataset or loss terms ({e})") from None
    try:
        config = base_config(*parts)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None

    def fill(node: ml_collections.ConfigDict, values: dict, prefix: str) -> None:
        for name, value in values.items():
            key = prefix + name
            if name not in node:
                raise ConfigError(f"{where}: {unknown_key(key, config)}")
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


def compute_dtype(name: str) -> str:
    """config.dtype -> "float32" | "bfloat16"; "auto" picks bfloat16 off the CPU."""
    if name == "auto":
        import jax  # here, not at import: jax.distributed must initialise first

        return "float32" if jax.default_backend() == "cpu" else "bfloat16"
    if name not in ("float32", "bfloat16"):
        raise ConfigError(f"dtype: {name!r} is not one of float32, bfloat16, auto")
    return name


# ---------------------------------------------------------------- shared experiment settings


def cpu_quick(c: ml_collections.ConfigDict, *, steps: int, size: int = 64, batch: int = 8):
    """The `:quick` smoke settings the experiments share: a few minutes on 2 CPU cores,
    `steps` AdamW steps on size x size `shapes` crops, two evaluations on 100 images."""
    c.total_steps = steps
    c.batch_size = batch
    c.eval.batch_size = 20
    c.data.image_size = (size, size)
    c.eval.size = (size, size)
    c.data.num_val = 100
    c.augment.scale_range = (1.0, 1.0)
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
    c.augment.scale_range = (0.5, 2.0)
    c.total_steps = 40_000
    c.eval_every = 4000
    c.checkpoint_every = 2000
    c.optim.name = "sgd"
    c.optim.lr = 0.01
    c.optim.schedule = "poly"
    c.dtype = "auto"
    return c
