"""The tfds source on a small TFDS dataset the test builds itself: no network, no TensorFlow
(Tensor features with zlib encoding need neither to write nor to read)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxseg.data import make_source, tfds_source


class TinyTrimaps(tfds.core.GeneratorBasedBuilder):
    """Pet-like trimaps: mask values 1, 2, 3; example i has mask value 1 + i % 3."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="zlib"),
            "segmentation_mask": tfds.features.Tensor(
                shape=(None, None, 1), dtype=np.uint8, encoding="zlib"
            ),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(6, 0), "test": self._generate_examples(3, 100)}

    def _generate_examples(self, n, offset):
        for i in range(n):
            image = np.full((6, 7, 3), offset + i, np.uint8)
            mask = np.full((6, 7, 1), 1 + i % 3, np.uint8)
            yield i, {"image": image, "segmentation_mask": mask}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    TinyTrimaps(data_dir=path, file_format="array_record").download_and_prepare()
    return path


OPTIONS = dict(
    tfds_name="tiny_trimaps",
    train_split="train",
    val_split="test",
    image_key="image",
    mask_key="segmentation_mask",
    class_names=("pet", "background", "border"),
    value_map=((1, 0), (2, 1), (3, 2)),
)


def test_reads_and_maps_both_splits(data_dir):
    train = make_source("tfds", "train", tfds_dir=data_dir, **OPTIONS)
    val = make_source("tfds", "val", tfds_dir=data_dir, **OPTIONS)
    assert len(train) == 6 and len(val) == 3
    assert train.class_names == ("pet", "background", "border")
    examples = [train[i] for i in range(6)]
    assert all(e["image"].shape == (6, 7, 3) and e["image"].dtype == np.uint8 for e in examples)
    # stored 1, 2, 3 -> classes 0, 1, 2
    assert sorted({int(e["mask"][0, 0]) for e in examples}) == [0, 1, 2]
    assert sorted(int(val[i]["image"][0, 0, 0]) for i in range(3)) == [100, 101, 102]


def test_unmapped_values_and_missing_dataset_are_named(data_dir):
    options = dict(OPTIONS, value_map=((1, 0), (2, 1)))
    source = make_source("tfds", "train", tfds_dir=data_dir, **options)
    with pytest.raises(ValueError, match=r"tiny_trimaps\[train\]\[\d\]: mask values \[3\]"):
        [source[i] for i in range(6)]
    with pytest.raises(FileNotFoundError, match="'no_such_set'.*not prepared"):
        make_source("tfds", "train", tfds_dir=data_dir, **dict(OPTIONS, tfds_name="no_such_set"))
    with pytest.raises(ValueError, match="has no preset; set data.train_split"):
        make_source("tfds", "train", tfds_dir=data_dir, tfds_name="tiny_trimaps")


def test_presets_are_consistent():
    for name, preset in tfds_source.PRESETS.items():
        k = len(preset["class_names"])
        targets = set(preset["value_map"].values())
        assert targets <= set(range(k)) | {255}, name
        assert set(range(k)) <= targets, name  # every class is reachable
    assert len(tfds_source.PRESETS["cityscapes/semantic_segmentation"]["class_names"]) == 19


def test_test_split_is_data_test_split(data_dir):
    test = make_source("tfds", "test", tfds_dir=data_dir, **OPTIONS, test_split="test[:2]")
    assert len(test) == 2
    with pytest.raises(ValueError, match="has no test split: set data.test_split"):
        make_source("tfds", "test", tfds_dir=data_dir, **OPTIONS)
