"""The embedded procedural dataset "shapes": geometric shapes on a textured background.

Each scene is a background plus 1..5 filled shapes (circle, square, triangle, ring; squares and
triangles turned by up to 26 degrees) painted in random order, so later shapes occlude earlier
ones. The background and every shape draw their colour from the same distribution, so the colour
of a pixel says nothing about its class: a per-pixel (1x1) classifier stays near "all
background", while a small convolutional net solves it from local geometry (corners, curvature,
the ring's hole). Backgrounds are solid, striped, checkered or gradient; shapes are solid or
gradient-filled; every image gets Gaussian noise.

It needs no download, renders any image size (shape and texture scales follow the shorter side),
and is deterministic per (seed, split, index), which makes it the dataset for tests, smoke runs
and the quick experiment.
"""

import operator

import numpy as np

from jaxseg.data.table import register

CLASS_NAMES: tuple[str, ...] = ("background", "circle", "square", "triangle", "ring")
NUM_CLASSES = len(CLASS_NAMES)
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

MAX_SHAPES = 5
# Shape "size" r as a fraction of the shorter image side; each class scales it so the four shape
# classes cover similar areas (circle pi r^2, square 3.14 r^2, triangle ~2.5 r^2, ring ~2.9 r^2).
SIZE_RANGE = (0.12, 0.25)
SQUARE_HALF_SIDE = 0.886  # (2 * 0.886 r)^2 = pi r^2
TRIANGLE_CIRCUMRADIUS = 1.4  # larger would clip corners at the border too often
RING_OUTER = 1.2
RING_INNER_RANGE = (0.45, 0.62)  # inner/outer radius: a hole that is visible, a band that is too
# Texture periods as fractions of the shorter side: kept below the shape sizes so that a texture
# cell never looks like a shape of its own (a checkerboard cell is not a "square").
STRIPE_PERIOD_RANGE = (0.05, 0.2)
CHECKER_PERIOD_RANGE = (0.05, 0.15)
NOISE_SIGMA_RANGE = (2.0, 10.0)  # per-image Gaussian noise, in 0..255 units
# Regions whose mean colours are closer than this (RGB distance) are resampled, a few times at
# most, so that a shape is rarely invisible against what it is painted over. It is relative to
# colours already drawn, so the marginal colour distribution stays the same for every class.
MIN_COLOUR_DISTANCE = 40.0
COLOUR_TRIES = 8


def _texture(
    rng: np.random.Generator,
    y: np.ndarray,
    x: np.ndarray,
    height: int,
    width: int,
    means: list[np.ndarray],
) -> np.ndarray:
    """Random colour and texture, the same distribution for background and every shape.

    Args:
      y: f32[h,1] and x: f32[1,w], pixel-centre coordinates (in the full image) of the region.
      means: mean colours of regions drawn so far; this region's is appended.

    Returns:
      f32[h,w,3] (or f32[1,1,3] for a solid colour, which broadcasts), values in [0, 255].
    """
    for _ in range(COLOUR_TRIES):
        c1 = rng.uniform(0.0, 255.0, 3).astype(np.float32)
        c2 = rng.uniform(0.0, 255.0, 3).astype(np.float32)
        # 0 solid, 1 stripes, 2 checkerboard, 3 linear gradient. Shapes are solid or
        # gradient-filled: with busy textures inside shapes too, the quick U-Net needs about
        # twice the steps; a per-pixel classifier cannot see texture either way.
        kind = int(rng.integers(4)) if not means else int(rng.choice((0, 3)))
        mean = c1 if kind == 0 else 0.5 * (c1 + c2)
        if all(np.linalg.norm(mean - m) >= MIN_COLOUR_DISTANCE for m in means):
            break
    means.append(mean)
    if kind == 0:
        return c1[None, None, :]

    side = float(min(height, width))
    angle = rng.uniform(0.0, np.pi)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    if kind == 1:
        period = rng.uniform(*STRIPE_PERIOD_RANGE) * side
        u = (x * cos + y * sin) / np.float32(period) + np.float32(rng.uniform())
        if rng.uniform() < 0.5:  # soft (sinusoidal) or hard (square-wave) stripes
            t = 0.5 + 0.5 * np.sin(np.float32(2 * np.pi) * u)
        else:
            t = (u - np.floor(u) < 0.5).astype(np.float32)
    elif kind == 2:
        period = np.float32(rng.uniform(*CHECKER_PERIOD_RANGE) * side)
        u = (x * cos + y * sin) / period
        v = (y * cos - x * sin) / period
        t = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    else:
        length = np.float32(rng.uniform(0.5, 1.5) * side)
        proj = (x - np.float32(width / 2)) * cos + (y - np.float32(height / 2)) * sin
        t = np.clip(proj / length + np.float32(0.5), 0.0, 1.0)
    return c1 + t[..., None] * (c2 - c1)


def _shape(
    cls: int, y: np.ndarray, x: np.ndarray, size: float, angle: float, inner: float
) -> np.ndarray:
    """Inside test of one filled shape centred at the origin.

    Args:
      cls: class index in 1..4 (circle, square, triangle, ring).
      y: f32[h,1] and x: f32[1,w], pixel-centre coordinates relative to the shape's centre.
      size: the shape's size r in pixels; angle: rotation in radians; inner: ring inner/outer.

    Returns:
      bool[h,w]; no anti-aliasing, so mask boundaries are exactly the painted boundaries.
    """
    if cls in (1, 4):
        d2 = x * x + y * y
        if cls == 1:
            return d2 <= np.float32(size * size)
        outer = RING_OUTER * size
        return (d2 <= np.float32(outer * outer)) & (d2 >= np.float32((inner * outer) ** 2))
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    if cls == 2:
        u = x * cos + y * sin
        v = y * cos - x * sin
        return np.maximum(np.abs(u), np.abs(v)) <= np.float32(SQUARE_HALF_SIDE * size)
    # Equilateral triangle: inside three half-planes whose normals are 120 degrees apart; the
    # inradius is half the circumradius.
    inradius = np.float32(0.5 * TRIANGLE_CIRCUMRADIUS * size)
    inside = np.ones(np.broadcast_shapes(y.shape, x.shape), dtype=bool)
    for k in range(3):
        a = angle + k * 2.0 * np.pi / 3.0
        inside &= x * np.float32(np.cos(a)) + y * np.float32(np.sin(a)) <= inradius
    return inside


# Radius of the circle around the centre that encloses each class (for the bounding box).
_EXTENT = {1: 1.0, 2: SQUARE_HALF_SIDE * np.sqrt(2.0), 3: TRIANGLE_CIRCUMRADIUS, 4: RING_OUTER}


def render_scene(
    rng: np.random.Generator, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draws one scene.

    Args:
      rng: consumed; the same generator state gives the same scene.
      height, width: image size in pixels (any, not necessarily square).

    Returns:
      (image u8[H,W,3], mask u8[H,W]) with mask values class indices in [0, NUM_CLASSES).
    """
    side = float(min(height, width))
    ys = np.arange(height, dtype=np.float32)[:, None] + np.float32(0.5)
    xs = np.arange(width, dtype=np.float32)[None, :] + np.float32(0.5)
    image = np.empty((height, width, 3), dtype=np.float32)
    mask = np.zeros((height, width), dtype=np.uint8)
    means: list[np.ndarray] = []
    image[...] = _texture(rng, ys, xs, height, width, means)

    for _ in range(rng.integers(1, MAX_SHAPES + 1)):
        cls = int(rng.integers(1, NUM_CLASSES))
        # Centres stay in the middle 80%, so most of every shape, and its shape cues, is visible.
        cy = rng.uniform(0.1, 0.9) * height
        cx = rng.uniform(0.1, 0.9) * width
        size = rng.uniform(*SIZE_RANGE) * side
        # Squares and triangles turn by at most +-26 degrees from upright: with any rotation,
        # small squares, triangles and circles take the quick U-Net far longer to tell apart.
        angle = rng.uniform(-0.45, 0.45) + (np.pi / 2 if cls == 3 else 0.0)
        inner = rng.uniform(*RING_INNER_RANGE)
        # Work on the shape's bounding box only: a shape covers a few percent of a large image.
        ext = _EXTENT[cls] * size
        y0, y1 = max(0, int(cy - ext)), min(height, int(cy + ext) + 2)
        x0, x1 = max(0, int(cx - ext)), min(width, int(cx + ext) + 2)
        y, x = ys[y0:y1], xs[:, x0:x1]
        inside = _shape(cls, y - np.float32(cy), x - np.float32(cx), size, angle, inner)
        tex = _texture(rng, y, x, height, width, means)
        np.copyto(image[y0:y1, x0:x1], tex, where=inside[..., None])
        np.copyto(mask[y0:y1, x0:x1], np.uint8(cls), where=inside)

    sigma = rng.uniform(*NOISE_SIGMA_RANGE)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    np.clip(image, 0.0, 255.0, out=image)
    return np.rint(image).astype(np.uint8), mask


class ShapesSource:
    """Grain-compatible random-access source of procedural "shapes" scenes.

    Example i of a split is rendered on demand from np.random.default_rng([seed, split_id, i]),
    so it is identical across processes, workers and runs, and the splits are disjoint streams.
    """

    class_names = CLASS_NAMES

    def __init__(
        self,
        split: str = "train",
        image_size: tuple[int, int] = (64, 64),
        num_examples: int = 10_000,
        seed: int = 0,
    ):
        """Args: split in SPLITS; image_size (H, W) in pixels; num_examples: the length."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; valid splits: {sorted(SPLITS)}")
        height, width = (int(s) for s in image_size)
        if height < 1 or width < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if num_examples < 0:
            raise ValueError(f"num_examples must be >= 0, got {num_examples}")
        self.split = split
        self.image_size = (height, width)
        self.num_examples = int(num_examples)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """Returns {"image": u8[H,W,3], "mask": u8[H,W]} with mask values in [0, NUM_CLASSES)."""
        index = operator.index(index)  # accepts numpy integers, as grain passes them
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} out of range for ShapesSource of length {len(self)}")
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        image, mask = render_scene(rng, *self.image_size)
        return {"image": image, "mask": mask}

    def __repr__(self) -> str:
        return (
            f"ShapesSource(split={self.split!r}, image_size={self.image_size}, "
            f"num_examples={self.num_examples}, seed={self.seed})"
        )


@register("shapes")
def build(
    split: str,
    *,
    image_size=(128, 128),
    eval_size=(128, 128),
    num_train: int = 10_000,
    num_val: int = 200,
    seed: int = 0,
):
    """num_train / num_val: examples generated for the train / each evaluation split."""
    # Evaluation splits are generated at the evaluation size; val and test are disjoint.
    train = split == "train"
    return ShapesSource(
        split,
        image_size=tuple(image_size if train else eval_size),
        num_examples=num_train if train else num_val,
        seed=seed,
    )
