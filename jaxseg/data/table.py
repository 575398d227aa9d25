"""DATASETS, the name -> source builder table, and `register`, which the built-in datasets
and plug-ins use alike:

    @jaxseg.data.register("blobs")
    def blobs(split: str, *, n: int = 64, seed: int = 0):  # options with defaults
        return BlobsSource(split, n, seed)  # len, getitem, class_names

A source is grain-compatible (`__len__`, `__getitem__(i) -> {"image": u8[H,W,3], "mask":
u8|i32[H,W]}`; a builder that takes `channels` yields u8 or u16[H,W,channels] images) and has
a `class_names` tuple (and may have a `palette` of (r, g, b)).
The config's data section is the builder's keyword arguments with their defaults
(jaxseg.configs), except SUPPLIED: those the run passes from elsewhere in the config.
"""

from __future__ import annotations

from jaxseg import registry

DATASETS: dict = {}
SPLITS = ("train", "val", "test")
# Keywords a builder may take that are not its own options: the run supplies them
# (seed: config.seed; eval_size: config.eval.size; the others: the data section's common
# fields, which every dataset has; a builder without `channels` reads RGB only).
SUPPLIED = ("seed", "eval_size", "image_size", "ignore_index", "invalid_to_ignore", "channels")


def register(name: str):
    """Function decorator: DATASETS[name] = builder `fn(split, *, options with defaults)`."""

    def add(builder):
        if not callable(builder):
            raise TypeError(f"dataset {name!r}: register a builder function, got {builder!r}")
        registry.keyword_options(builder)  # every option has a usable default
        registry.add(DATASETS, "dataset", name, builder)
        return builder

    return add


def options(name: str) -> dict:
    """{option: default} of dataset `name`: its builder's keywords but SUPPLIED."""
    return registry.keyword_options(registry.lookup(DATASETS, "dataset", name), skip=SUPPLIED)


def make_source(name: str, split: str, **options):
    """DATASETS[name](split, **options). Of SUPPLIED keywords, those the builder does not take
    are dropped; any other option it does not take raises TypeError naming it."""
    builder = registry.lookup(DATASETS, "dataset", name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    takes = registry.keyword_options(builder)
    foreign = [k for k in options if k not in takes and k not in SUPPLIED]
    if foreign:
        raise TypeError(f"dataset {name!r} takes no option {foreign[0]!r}")
    return builder(split, **{k: v for k, v in options.items() if k in takes})


def takes_channels(name: str) -> bool:
    """Whether dataset `name` reads images other than 3-channel RGB (its builder takes
    `channels`, the data section's channel count)."""
    return "channels" in registry.keyword_options(registry.lookup(DATASETS, "dataset", name))
