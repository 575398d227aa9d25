"""tests/crash_trials.py as a test: 20 SIGKILLs, at random moments and during asynchronous
saves (at least 5 of them), then bit-identical."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_twenty_random_kills_end_bit_identical(tmp_path):
    from crash_trials import run_trials

    verdict = run_trials(20, str(tmp_path), seed=1, log=lambda *a: None)
    assert verdict["same_params"] and verdict["same_metrics"], verdict
    assert verdict["trials"] == 20
    # Half the kills wait for a save to begin; at least 5 must land before it finishes.
    assert verdict["during_save"] >= 5, verdict["kills"]
