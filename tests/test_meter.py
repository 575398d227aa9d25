"""jaxseg.meter.StepMeter: the train loop's log lines, non-finite streaks and the unlogged
steps a checkpoint carries, checked against hand computations."""

import numpy as np
import pytest

from jaxseg import meter as meter_lib
from jaxseg.meter import StepMeter


def _m(loss, grad_norm=1.0, lr=0.1, finite=True):
    return {
        "loss": np.float32(loss),
        "grad_norm": np.float32(grad_norm),
        "lr": np.float32(lr),
        "finite": np.bool_(finite),
    }


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(meter_lib.time, "perf_counter", lambda: now[0])
    return now


def test_line_averages_the_window_and_counts_images_per_second(clock):
    m = StepMeter(batch_size=4, skip_nonfinite=0)
    m.add(_m(1.0, 2.0, 0.5))
    m.restart_clock(1)  # after the first (compiling) step
    for loss in (2.0, 4.0):
        m.add(_m(loss, 4.0, 0.25))
    clock[0] += 2.0
    m.settle(3)
    line = m.line(3)
    assert line == {
        "train/loss": pytest.approx(7 / 3),
        "train/lr": pytest.approx(0.25),
        "train/grad_norm": pytest.approx(10 / 3),
        "train/img_per_sec": pytest.approx(2 * 4 / 2.0),  # steps 2 and 3, 4 images each
    }
    assert m.line(3) is None  # the window starts again, empty


def test_nonfinite_streak_longer_than_allowed_raises_naming_step_and_checkpoint(clock):
    m = StepMeter(batch_size=1, skip_nonfinite=1, last_good=10, checkpoints="w/checkpoints")
    m.restart_clock(10)
    m.add(_m(1.0))
    m.add(_m(float("nan"), finite=False))  # one skipped: allowed
    m.add(_m(1.0))
    clock[0] += 1.0
    m.settle(13)
    assert m.line(13)["train/skipped"] == 1
    m.add(_m(float("inf"), finite=False))
    m.add(_m(float("nan"), finite=False))
    with pytest.raises(FloatingPointError) as e:
        m.settle(15)
    assert str(e.value) == (
        "non-finite loss or gradient at step 15 (loss nan, after 1 skipped in a row: "
        "optim.skip_nonfinite=1); the last good checkpoint is step 10 in w/checkpoints"
    )


def test_without_skipping_the_first_nonfinite_step_raises():
    m = StepMeter(batch_size=1, skip_nonfinite=0)
    m.add(_m(float("nan"), finite=False))
    with pytest.raises(FloatingPointError, match="at step 1 .*no checkpoint was saved"):
        m.settle(1)


def test_the_unlogged_window_travels_with_a_checkpoint(clock):
    m = StepMeter(batch_size=2, skip_nonfinite=0)
    m.restart_clock(0)
    m.add(_m(1.0))
    m.add(_m(2.0))
    m.settle(2)
    carried = m.saved(2)
    assert m.last_good == 2 and [s["loss"] for s in carried["steps"]] == [1.0, 2.0]
    resumed = StepMeter(batch_size=2, skip_nonfinite=0, carried=carried)
    resumed.restart_clock(2)
    resumed.add(_m(6.0))
    clock[0] += 1.0
    resumed.settle(3)
    # The first line after the resume averages steps 1-3, as an uninterrupted run's would.
    assert resumed.line(3)["train/loss"] == pytest.approx(3.0)


def test_each_seeds_mean_is_its_own_runs_bit_for_bit(clock):
    """A seeds=3 meter logs per seed exactly what a one-seed meter logs for that seed's
    steps, over a window long enough (25) for numpy's pairwise sums to show."""
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.1, 2.0, (25, 3)).astype(np.float32)
    together = StepMeter(batch_size=1, skip_nonfinite=0)
    alone = [StepMeter(batch_size=1, skip_nonfinite=0) for _ in range(3)]
    for meter in (together, *alone):
        meter.restart_clock(0)
    for row in losses:
        together.add({**_m(0.0), "loss": row, "grad_norm": row, "finite": np.ones(3, bool)})
        for meter, loss in zip(alone, row, strict=True):
            meter.add(_m(loss, loss))
    for meter in (together, *alone):
        meter.settle(25)
    clock[0] += 1.0
    line = together.line(25)
    assert line["train/loss"] == [a.line(25)["train/loss"] for a in alone]
    # The single runs' values, by numpy's own pairwise sum of each column.
    assert line["train/grad_norm"] == [float(np.mean(losses[:, i].copy())) for i in range(3)]
