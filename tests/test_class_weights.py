"""Class weights: hand-computed values for each method, ignore pixels, absent classes, the cache."""

import json
import math
import os

import numpy as np
import pytest

from jaxseg import class_weights as cw

K = 4  # class 3 never appears
# Counts: class 0: 3 + 0 + 4 = 7, class 1: 1 + 2 = 3, class 2: 1; 11 labelled pixels in all.
# Labelled pixels of the images holding each class: 0 -> 4 + 4 = 8, 1 -> 4 + 3 = 7, 2 -> 3.
MASKS = (
    np.array([[0, 0], [0, 1]], np.uint8),
    np.array([[1, 1], [255, 2]], np.int32),
    np.array([[0, 0, 0], [0, 255, 255]], np.uint8),
)
EXPECTED = {
    "inverse": [11 / 28, 11 / 12, 11 / 4, 0.0],
    # freq = 7/8, 3/7, 1/3; median 3/7.
    "median": [(3 / 7) / (7 / 8), 1.0, (3 / 7) / (1 / 3), 0.0],
    "enet": [1 / math.log(1.02 + n / 11) for n in (7, 3, 1)] + [0.0],
}


class FakeSource:
    """len/getitem over MASKS; counts reads so a test can prove the cache is used."""

    def __init__(self, masks=MASKS, name="fake"):
        self.masks, self.name, self.reads = masks, name, 0

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, i):
        self.reads += 1
        return {"mask": self.masks[i]}

    def __repr__(self):
        return f"FakeSource({self.name!r})"


def test_frequencies_skip_ignore_pixels():
    pixels, present = cw.class_frequencies(FakeSource(), K, progress=False)
    assert pixels.dtype == present.dtype == np.int64
    np.testing.assert_array_equal(pixels, [7, 3, 1, 0])
    np.testing.assert_array_equal(present, [8, 7, 3, 0])


@pytest.mark.parametrize("method", cw.METHODS)
def test_weights_hand_computed(method):
    pixels, present = cw.class_frequencies(FakeSource(), K, progress=False)
    w = cw.compute_weights(pixels, present, method)
    assert w.dtype == np.float32 and w.shape == (K,)
    assert np.isfinite(w).all() and w[3] == 0.0
    np.testing.assert_allclose(w, EXPECTED[method], rtol=1e-6)


@pytest.mark.parametrize("method", cw.METHODS)
def test_nothing_seen_gives_zeros(method):
    pixels, present = cw.class_frequencies(
        FakeSource((np.full((2, 2), 255, np.uint8),)), K, progress=False
    )
    w = cw.compute_weights(pixels, present, method)
    np.testing.assert_array_equal(w, np.zeros(K, np.float32))


def test_label_out_of_range_rejected():
    with pytest.raises(ValueError, match="label 7 outside"):
        cw.class_frequencies(FakeSource((np.array([[0, 7]]),)), K, progress=False)


def test_unknown_method_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="'bogus'; valid: inverse, median, enet"):
        cw.compute_weights([1, 2], [3, 3], "bogus")
    source = FakeSource()
    with pytest.raises(ValueError, match="valid: inverse, median, enet"):
        cw.class_weights(source, K, "bogus", workdir=str(tmp_path), progress=False)
    assert source.reads == 0


def test_cache_written_reused_and_invalidated(tmp_path):
    workdir = str(tmp_path / "run")
    path = os.path.join(workdir, cw.CACHE_NAME)
    first = FakeSource()
    w = cw.class_weights(first, K, "median", workdir=workdir, progress=False)
    assert first.reads == 3
    np.testing.assert_allclose(w, EXPECTED["median"], rtol=1e-6)
    with open(path) as f:
        record = json.load(f)
    assert record["method"] == "median" and record["num_classes"] == K
    assert record["source"] == "FakeSource('fake')"
    assert record["pixel_counts"] == [7, 3, 1, 0]
    np.testing.assert_array_equal(record["weights"], w)

    again = FakeSource()  # same repr: served from the file, bit-exact, no reads
    np.testing.assert_array_equal(cw.class_weights(again, K, "median", workdir=workdir), w)
    assert again.reads == 0

    other_method = FakeSource()
    w_inv = cw.class_weights(other_method, K, "inverse", workdir=workdir, progress=False)
    assert other_method.reads == 3
    np.testing.assert_allclose(w_inv, EXPECTED["inverse"], rtol=1e-6)
    with open(path) as f:
        assert json.load(f)["method"] == "inverse"

    for changed in (FakeSource(name="other"), FakeSource()):  # another source, then another K
        k = K if changed.name == "other" else K + 1
        cw.class_weights(changed, k, "inverse", workdir=workdir, progress=False)
        assert changed.reads == 3
