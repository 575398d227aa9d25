"""Class-balanced sampling: repeat factors, drawn class frequencies, exact resume, cache."""

import os

import numpy as np

from jaxseg import class_weights as cw
from jaxseg.data import pipeline


class Labelled:
    """Example i: a 4x4 mask filled with its class (class 2 only in the last example)."""

    class_names = ("a", "b", "rare")

    def __init__(self, classes):
        self.classes = list(classes)

    def __len__(self):
        return len(self.classes)

    def __getitem__(self, i):
        mask = np.full((4, 4), self.classes[i], np.uint8)
        return {"image": np.full((4, 4, 3), i, np.uint8), "mask": mask, "name": str(i)}

    def __repr__(self):
        return f"Labelled({self.classes})"


CLASSES = [0] * 12 + [1] * 7 + [2]  # image shares 0.6, 0.35, 0.05


def test_repeat_factors():
    rows = np.eye(3, dtype=bool)[CLASSES]
    share = rows.mean(0)
    p = pipeline.sampling_probabilities(rows, share, threshold=0.2)
    # r = max(1, sqrt(0.2 / share)): 1, 1, 2 -> the rare example drawn twice as often.
    assert np.isclose(p[-1] / p[0], 2.0) and np.isclose(p[12], p[0]) and np.isclose(p.sum(), 1)
    none = pipeline.sampling_probabilities(np.zeros((4, 3), bool), np.zeros(3), 0.5)
    np.testing.assert_allclose(none, 0.25)


def _iterator(source, probabilities, seed=0):
    return pipeline.train_iterator(
        source,
        batch_size=4,
        seed=seed,
        num_classes=3,
        crop_size=(4, 4),
        hflip=False,
        read_threads=1,
        sample_probabilities=probabilities,
    )


def test_drawn_class_frequencies_follow_the_target_and_resume_exactly(tmp_path):
    source = Labelled(CLASSES)
    rows, share = cw.image_classes(source, 3, workdir=str(tmp_path), progress=False)
    np.testing.assert_allclose(share, [0.6, 0.35, 0.05])
    p = pipeline.sampling_probabilities(rows, share, threshold=0.5)
    target = p @ rows  # the share of draws holding each class
    assert target[2] > 2.5 * share[2]
    it = _iterator(source, p)
    draws = np.concatenate([next(it)["mask"][:, 0, 0] for _ in range(500)])
    freq = np.bincount(draws, minlength=3) / len(draws)
    tolerance = 4 * np.sqrt(target * (1 - target) / len(draws))
    assert (np.abs(freq - target) < tolerance).all(), (freq, target)

    state = it.get_state()
    expected = [next(it)["image"][:, 0, 0, 0] for _ in range(3)]
    again = _iterator(source, p)
    again.set_state(state)
    for batch in expected:
        np.testing.assert_array_equal(next(again)["image"][:, 0, 0, 0], batch)
    other_seed = _iterator(source, p, seed=1)
    first = [next(_iterator(source, p))["image"][:, 0, 0, 0], next(other_seed)["image"][:, 0, 0, 0]]
    assert not np.array_equal(*first)

    # The per-process cache is reused, and not for another source.
    assert os.path.exists(tmp_path / "class_presence.p0of1.json")
    again_rows, _ = cw.image_classes(source, 3, workdir=str(tmp_path), progress=False)
    np.testing.assert_array_equal(again_rows, rows)
    swapped = Labelled(CLASSES[::-1])
    np.testing.assert_array_equal(
        cw.image_classes(swapped, 3, workdir=str(tmp_path), progress=False)[0], rows[::-1]
    )
