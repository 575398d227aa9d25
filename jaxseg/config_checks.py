"""Options that would not act, refused before anything is built: slide or CRF settings
their switch leaves off, host-only or device-only augmentation on the other backend, class
weights without a term that takes them. Model, dataset and loss options need no check: the
config holds only those the chosen parts take (jaxseg.configs). Values a part validates
itself (an optimizer's name, an inference setting) are checked as jaxseg.recipe.build
builds it.
"""

from __future__ import annotations

import ml_collections

from jaxseg import configs, losses
from jaxseg import workdir as run_files
from jaxseg.data import table as datasets
from jaxseg.data.augment_spec import AugmentSpec

SLIDE_FIELDS = ("crop_size", "stride", "window_batch")
# The eval.* fields that shape inference itself (predict, export, the Segmenter API).
INFERENCE_FIELDS = (
    *(f"eval.{k}" for k in ("mode", *SLIDE_FIELDS, "scales", "flip")),
    *(f"eval.crf.{k}" for k in ("enabled", *configs.crf_defaults())),
)
AUGMENT_BACKENDS = ("host", "device")


def check_options(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first field of config that would not act (or has the
    wrong type)."""
    configs.check_types(config)
    _check_channels(config)
    _check_augment(config)
    _check_loss(config.loss)
    _check_mesh(config)
    if config.seeds_vmap and config.seeds == 1:
        raise configs.ConfigError("seeds_vmap=True acts only with seeds > 1 (seeds=1)")
    defaults = configs.base_config().eval
    if config.eval.mode == "whole":
        unused = [k for k in SLIDE_FIELDS if config.eval[k] != defaults[k]]
        if unused:
            raise configs.ConfigError(
                f"eval.{unused[0]} is set but eval.mode is 'whole'; set eval.mode=slide"
            )
    if not config.eval.crf.enabled:
        unused = [k for k, v in configs.crf_defaults().items() if config.eval.crf[k] != v]
        if unused:
            raise configs.ConfigError(
                f"eval.crf.{unused[0]} is set but eval.crf.enabled is False; "
                "set eval.crf.enabled=True"
            )


def with_overrides(config, overrides: dict) -> ml_collections.ConfigDict:
    """config with {dotted key: value} set: model.name, data.name and loss.terms first (each
    rebuilds its section, jaxseg.configs.rebuild), then the rest, each typed against the
    field it sets (a wrong type or unknown key raises ConfigError naming it)."""
    overrides = dict(overrides)
    chosen = {
        arg: overrides.pop(key)
        for key, arg in (("model.name", "model"), ("data.name", "data"), ("loss.terms", "terms"))
        if key in overrides
    }
    config = configs.rebuild(config, **chosen) if chosen else config.copy_and_resolve_references()
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        try:
            for part in parents:
                node = node[part]
            node[leaf] = value
        except (AttributeError, KeyError):
            raise configs.unknown_key(key, config) from None
        except TypeError:
            raise configs.ConfigError(
                f"config key {key!r} needs a {type(node[leaf]).__name__} like {node[leaf]!r}, "
                f"got {value!r}"
            ) from None
    config.lock()
    return config


def trained_config(workdir: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """A run's saved config.json with {dotted key: value} overrides applied and checked
    (types, and options that would not act)."""
    config = with_overrides(run_files.read_config(workdir), overrides or {})
    check_options(config)
    return config


def _check_channels(config) -> None:
    """What needs RGB, for another data.channels (its count and mean/std lengths are checked
    with the types): a dataset that reads other counts, no hue or saturation changes, no
    CRF (its colour kernel)."""
    data, channels = config.data, config.data.channels
    if channels == 3:
        return
    if not datasets.takes_channels(data.name):
        raise configs.ConfigError(
            f"data.name={data.name!r} reads RGB images only; data.channels={channels} needs a "
            "dataset that takes channels, such as folder"
        )
    if config.augment.photometric:
        raise configs.ConfigError(
            f"augment.photometric changes hue and saturation, which need RGB; with "
            f"data.channels={channels} set augment.photometric=False"
        )
    if config.eval.crf.enabled:
        raise configs.ConfigError(
            f"eval.crf's colour kernel is in 0..255 RGB units; with data.channels={channels} "
            "set eval.crf.enabled=False"
        )


def _check_augment(config) -> None:
    """Augmentation and sampling options: each must act where it is set."""
    aug = config.augment
    if aug.backend not in AUGMENT_BACKENDS:
        raise configs.ConfigError(
            f"augment.backend={aug.backend!r} is unknown; valid: {', '.join(AUGMENT_BACKENDS)}"
        )
    if aug.elastic_grid < 2:
        raise configs.ConfigError(f"augment.elastic_grid={aug.elastic_grid} needs 2 or more")
    if aug.elastic_grid != AugmentSpec.elastic_grid and not aug.elastic_sigma:
        raise configs.ConfigError(
            "augment.elastic_grid is set but augment.elastic_sigma is 0 (off)"
        )
    if not 0.0 <= config.loader.repeat_threshold <= 1.0:
        raise configs.ConfigError(
            f"loader.repeat_threshold={config.loader.repeat_threshold} is a share of images, "
            "in [0, 1]"
        )
    if config.loader.num_workers < -1:
        raise configs.ConfigError(
            f"loader.num_workers={config.loader.num_workers}: 0 or more, or -1 (auto)"
        )
    if aug.backend == "host":
        if aug.canvas_size:
            raise configs.ConfigError(
                "augment.canvas_size is set but augment.backend is 'host'; set backend=device"
            )
        return
    if aug.cat_max_ratio < 1.0:
        raise configs.ConfigError(
            "augment.cat_max_ratio redraws crops on the host; with augment.backend='device' "
            "leave it at 1.0"
        )
    if losses.needs_distance(config.loss.terms):
        raise configs.ConfigError(
            "the boundary loss's distance maps are made on the host after augmentation; "
            "use augment.backend='host' with it"
        )


def _check_loss(loss) -> None:
    """Class weights need a term that takes them."""
    names = [str(name) for name, _ in configs.loss_terms(loss.terms)]
    weighted = [n for n in names if losses.takes(n, "class_weights")]
    if (loss.class_weights or loss.class_weight_method) and not weighted:
        raise configs.ConfigError(
            f"class weights act on the terms that take them (ce, ohem, topk, ...), and "
            f"loss.terms {tuple(names)} has none of them"
        )


MAX_STRIDE = 32  # the deepest feature stride of any model in jaxseg.models


def _check_mesh(config) -> None:
    """mesh.spatial splits the training crop's height evenly, and leaves each device at least
    one row of the deepest (stride 32) features (the device count is checked where the mesh
    is made: check_mesh)."""
    spatial, height = config.mesh.spatial, config.data.image_size[0]
    if spatial < 1 or height % spatial:
        raise configs.ConfigError(
            f"mesh.spatial={spatial} does not divide the crop height data.image_size[0]={height}"
        )
    # Below one row a device, XLA's partitioner counted a depthwise conv's kernel gradient
    # once per device (SegFormer at 32 rows: 2x and 4x at spatial 2 and 4; jax 0.10.2).
    if spatial > 1 and height < MAX_STRIDE * spatial:
        raise configs.ConfigError(
            f"mesh.spatial={spatial} needs data.image_size[0] >= {MAX_STRIDE * spatial} "
            f"({MAX_STRIDE} rows a device, the models' deepest stride); got {height}"
        )


def check_mesh(config, devices: int) -> None:
    """mesh.spatial (checked by check_options) also divides the device count."""
    _check_mesh(config)
    if devices % config.mesh.spatial:
        raise configs.ConfigError(
            f"mesh.spatial={config.mesh.spatial} does not divide the {devices} devices"
        )
