"""The training-augmentation options, declared once: AugmentSpec's fields are the config's
augment section (jaxseg.configs builds it from them) and what both backends take, the host
chain (jaxseg.data.transforms.train_transform, in grain workers, in uint8) and the device
chain (jaxseg.augment.augment_batch, inside the jitted train step). The two run the same
operations with the same distributions (tests/test_device_augment.py).

Which backend each option acts on:

    option          host  device
    backend          -     -     which of the two runs (host | device)
    scale_range      x     x     random rescale before the crop
    hflip            x     x     random horizontal flip
    vflip            x     x     random vertical flip
    rot90            x     x     random 90-degree rotations
    elastic_sigma    x     x     elastic deformation (with elastic_grid)
    elastic_grid     x     x
    photometric      x     x     mmseg's photometric distortion
    blur_prob        x     x     random Gaussian blur
    cat_max_ratio    x     -     crop redraws (jaxseg.recipe refuses it on the device)
    canvas_size      -     x     the host pads to it for the device (refused on the host)

crop_size and ignore_index come from the data section (data.image_size, data.ignore_index),
not from augment.*; they are fields here so that one value carries every setting.
"""

from __future__ import annotations

import dataclasses

from jaxseg import registry

# AugmentSpec's fields that the data section supplies (data.image_size, data.ignore_index).
FROM_DATA = ("crop_size", "ignore_index")


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    """One run's training augmentation (hashable: the jitted train step closes over it).

    The chain, on both backends: rescale by s ~ U(scale_range) -> crop crop_size (padding:
    image 0, mask ignore_index) -> hflip, vflip, rot90 (each with probability 1/2; rot90 by
    0 or 180 degrees only on a non-square crop) -> elastic -> photometric -> blur.
    """

    crop_size: tuple[int, int]  # (h, w) of the training crop; data.image_size
    ignore_index: int = 255  # mask value of the crop's padding; data.ignore_index
    # host: grain workers augment in uint8; device: the train step does, on a padded canvas.
    backend: str = "host"
    scale_range: tuple[float, float] = (1.0, 1.0)  # random rescale factor range before cropping
    hflip: bool = True  # random horizontal flip
    vflip: bool = False  # random vertical flip
    rot90: bool = False  # random 90-degree rotations (180 only for non-square crops)
    photometric: bool = False  # random brightness, contrast, saturation and hue (mmseg's)
    blur_prob: float = 0.0  # probability of a random Gaussian blur, sigma ~ U(0.1, 2.0)
    elastic_sigma: float = 0.0  # elastic deformation (U-Net paper): displacement std, pixels
    elastic_grid: int = 3  # elastic deformation: random displacements on a grid x grid lattice
    cat_max_ratio: float = 1.0  # host only: redraw crops where one class covers more than this
    canvas_size: tuple[int, ...] = ()  # device only: (H, W) images are padded to; (): the first's

    def __post_init__(self):
        # Config values arrive as lists from JSON and as None from older callers (no rescale):
        # normalised so that equal settings hash equally under jit.
        scale = (1.0, 1.0) if self.scale_range is None else self.scale_range
        object.__setattr__(self, "crop_size", tuple(int(v) for v in self.crop_size))
        object.__setattr__(self, "scale_range", tuple(float(v) for v in scale))
        object.__setattr__(self, "canvas_size", tuple(int(v) for v in self.canvas_size))

    @property
    def rescales(self) -> bool:
        """Whether a rescale factor is drawn (scale_range other than (1, 1))."""
        return self.scale_range != (1.0, 1.0)


def section_defaults() -> dict:
    """{option: default} of the config's augment section: AugmentSpec's fields but those the
    data section supplies."""
    return registry.field_options(AugmentSpec, skip=FROM_DATA)
