import subprocess
import sys

import numpy as np
import pytest

from jaxseg import input_throughput
from jaxseg.data.pipeline import eval_batches, train_iterator
from jaxseg.data.shapes import ShapesSource


def _iterator(**kw):
    return train_iterator(
        ShapesSource("train", (16, 16), 20),
        batch_size=4,
        seed=1,
        num_classes=5,
        crop_size=(12, 12),
        **kw,
    )


def test_resume_mid_epoch_gives_the_same_next_batches():
    it = _iterator(scale_range=(0.5, 1.5), photometric=True)
    for _ in range(3):  # 12 of 20 examples: mid-epoch
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(4)]  # crosses into the next epoch
    resumed = _iterator(scale_range=(0.5, 1.5), photometric=True)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["mask"], want["mask"])


class _BadMasks:
    class_names = ("a", "b")

    def __len__(self):
        return 4

    def __getitem__(self, i):
        mask = np.zeros((6, 6), np.uint8)
        mask[0, 0] = 7  # not a class, not ignore
        return {"image": np.zeros((6, 6, 3), np.uint8), "mask": mask, "name": f"bad{i}.png"}


def test_invalid_mask_values_raise_or_become_ignore():
    with pytest.raises(ValueError, match=r"bad\d.png: mask values \[7\]"):
        next(train_iterator(_BadMasks(), batch_size=2, seed=0, num_classes=2, crop_size=(6, 6)))
    batch = next(
        train_iterator(
            _BadMasks(),
            batch_size=2,
            seed=0,
            num_classes=2,
            crop_size=(6, 6),
            hflip=False,
            invalid_to_ignore=True,
        )
    )
    assert set(np.unique(batch["mask"])) == {0, 255}
    with pytest.raises(ValueError, match="bad0.png"):
        next(eval_batches(_BadMasks(), batch_size=2, pad_to=(6, 6), num_classes=2))


def test_eval_resizes_by_shorter_side_then_pads():
    source = ShapesSource("val", (20, 30), 3)
    batches = list(
        eval_batches(source, batch_size=2, pad_to=(12, 20), num_classes=5, shorter_side=10)
    )
    assert [b["valid"].tolist() for b in batches] == [[True, True], [True, False]]
    first = batches[0]
    assert first["image"].shape == (2, 12, 20, 3)
    # 20x30 -> 10x15, then padded with ignore to 12x20
    assert np.all(first["mask"][:, 10:] == 255) and np.all(first["mask"][:, :, 15:] == 255)
    assert first["mask"][:, :10, :15].max() < 5


_FAULTS = """
import resource, sys
import numpy as np
from jaxseg.data import pipeline
from jaxseg.data.folder import FolderSource
if sys.argv[2] == "off":
    pipeline.keep_freed_memory = lambda: False
source = FolderSource(sys.argv[1], "train", class_names=tuple("abcde"), split_ratio=1.0)
transform = pipeline.TrainTransform(num_classes=5, ignore_index=255, crop_size=(512, 1024),
                                    scale_range=(0.5, 2.0), photometric=True)
for i in range(3):
    transform.random_map(source[i % len(source)], np.random.default_rng(i))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(12):
    transform.random_map(source[i % len(source)], np.random.default_rng(i))
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 12)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_host_path_reuses_freed_memory(tmp_path):
    # keep_freed_memory: without it every 1024x2048 example faults in its fresh
    # multi-megabyte arrays page by page again (thousands of faults, a third of the time).
    # The files are written here: writing them in the measured process would warm its heap.
    input_throughput.write_folder(str(tmp_path), count=4, size=(1024, 2048))
    faults = {
        mode: float(subprocess.run([sys.executable, "-c", _FAULTS, str(tmp_path), mode],
                                   capture_output=True, text=True, check=True).stdout)
        for mode in ("on", "off")
    }  # fmt: skip
    assert faults["on"] < 200 < 2000 < faults["off"], faults
