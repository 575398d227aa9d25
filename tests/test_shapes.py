import numpy as np
import pytest

from jaxseg.data import make_source
from jaxseg.data.shapes import CLASS_NAMES, ShapesSource


def test_deterministic_per_seed_split_index():
    a, b = ShapesSource("train", (48, 40), 10, seed=3), ShapesSource("train", (48, 40), 10, seed=3)
    for i in (0, 7):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        np.testing.assert_array_equal(a[i]["mask"], b[i]["mask"])
    other_seed = ShapesSource("train", (48, 40), 10, seed=4)
    assert not np.array_equal(a[0]["image"], other_seed[0]["image"])
    assert not np.array_equal(a[0]["image"], a[1]["image"])


def test_train_and_val_splits_differ():
    train, val = ShapesSource("train", (32, 32), 50), ShapesSource("val", (32, 32), 50)
    train_images = {train[i]["image"].tobytes() for i in range(50)}
    assert not any(val[i]["image"].tobytes() in train_images for i in range(50))


@pytest.mark.parametrize("size", [(64, 64), (37, 53), (256, 192)])
def test_shapes_dtypes_and_values(size):
    example = ShapesSource("val", size, 5)[4]
    assert example["image"].shape == (*size, 3) and example["image"].dtype == np.uint8
    assert example["mask"].shape == size and example["mask"].dtype == np.uint8
    assert example["mask"].max() < len(CLASS_NAMES)


def test_every_class_appears_and_frequencies_are_sane():
    source = ShapesSource("train", (64, 64), 100)
    masks = np.stack([source[i]["mask"] for i in range(100)])
    freq = np.bincount(masks.ravel(), minlength=len(CLASS_NAMES)) / masks.size
    assert len(CLASS_NAMES) >= 5
    assert 0.5 < freq[0] < 0.85, freq  # background
    assert np.all(freq[1:] > 0.03), freq  # every shape class is well represented


def test_colour_is_uninformative():
    # The mean colour of each class over many scenes is about the same grey: no class owns a hue.
    source = ShapesSource("train", (64, 64), 400)
    examples = [source[i] for i in range(400)]
    images = np.stack([e["image"] for e in examples]).reshape(-1, 3).astype(np.float64)
    masks = np.stack([e["mask"] for e in examples]).ravel()
    means = np.stack([images[masks == k].mean(0) for k in range(len(CLASS_NAMES))])
    assert np.abs(means - means[0]).max() < 15, means  # 400 scenes: standard error ~4


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="valid splits"):
        ShapesSource("tran")
    with pytest.raises(IndexError, match="index 10 out of range"):
        ShapesSource("train", (8, 8), 10)[10]
    with pytest.raises(KeyError, match="valid: ade20k, camvid, cityscapes, .*, shapes, tfds"):
        make_source("shapez", "train")
    val = make_source(
        "shapes", "val", image_size=(8, 8), eval_size=(6, 9), num_train=5, num_val=3, seed=0
    )
    assert len(val) == 3 and val[0]["mask"].shape == (6, 9) and len(val.class_names) == 5
