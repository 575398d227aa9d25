import os

import grain
import jax
import numpy as np
import optax
import pytest

from jaxseg import checkpoint
from jaxseg.models import build_model
from jaxseg.state import create_train_state


def _state(seed):
    model = build_model("unet", 3, base_width=2, depth=1)
    return create_train_state(model, optax.sgd(0.1, 0.9), jax.random.key(seed), (8, 8, 3))


def _iterator():
    return iter(grain.MapDataset.range(10).to_iter_dataset())


def test_keeps_newest_and_best(tmp_path):
    manager = checkpoint.make_manager(str(tmp_path), keep=2)
    state, it = _state(0), _iterator()
    mious = {1: 0.1, 2: 0.9, 3: 0.2, 4: None, 5: 0.3, 6: None}
    for step, miou in mious.items():
        metrics = {"val/miou": miou} if miou is not None else None
        checkpoint.save(manager, step, state, it, metrics)
        manager.wait_until_finished()
    assert sorted(manager.all_steps()) == [2, 5, 6]  # the best (2) and the newest two
    manager.close()


def test_restore_latest_restores_iterator_and_state(tmp_path):
    manager = checkpoint.make_manager(str(tmp_path))
    state, it = _state(0), _iterator()
    next(it), next(it)
    checkpoint.save(manager, 7, state.replace(step=state.step + 7), it)
    manager.wait_until_finished()
    fresh_it = _iterator()
    restored, step = checkpoint.restore_latest(manager, _state(1), fresh_it)
    assert step == 7 and int(restored.step) == 7
    jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
    assert next(fresh_it) == 2  # continues where the saved iterator stood
    manager.close()


def test_restore_latest_into_an_abstract_target_and_none_when_empty(tmp_path):
    state = _state(0)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
    empty = checkpoint.make_manager(str(tmp_path / "empty"))
    assert checkpoint.restore_latest(empty, abstract, _iterator()) == (None, 0)
    empty.close()
    manager = checkpoint.make_manager(str(tmp_path / "full"))
    checkpoint.save(manager, 3, state, _iterator())
    manager.wait_until_finished()
    restored, step = checkpoint.restore_latest(manager, abstract, _iterator())
    assert step == 3
    jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
    manager.close()


def test_init_from_loads_weights_only(tmp_path):
    trained = _state(0)
    trained = trained.replace(step=trained.step + 5)
    manager = checkpoint.make_manager(str(tmp_path / "checkpoints"))
    checkpoint.save(manager, 5, trained, _iterator())
    manager.wait_until_finished()
    manager.close()
    fresh = _state(1)
    for path in (tmp_path, tmp_path / "checkpoints", tmp_path / "checkpoints" / "5"):
        loaded = checkpoint.load_weights(str(path), fresh)
        jax.tree.map(np.testing.assert_array_equal, loaded.params, trained.params)
        assert int(loaded.step) == 0  # a new run: step and optimizer state are not taken
    pairs = zip(jax.tree.leaves(fresh.params), jax.tree.leaves(trained.params), strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)  # the load did change something


def test_init_from_missing_path_names_it(tmp_path):
    missing = os.path.join(tmp_path, "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        checkpoint.load_weights(missing, _state(0))
