"""jaxseg.crf.mean_field's two formulations (scan, unrolled) give one result, and
benchmarks/crf_speed.py times both."""

import numpy as np

from jaxseg import crf
from tests import benchmark_scripts


def test_unrolled_equals_scan_and_the_table_runs(capsys):
    m = benchmark_scripts.load("crf_speed")
    probs, image = m.inputs(2, 9, 3)
    params = crf.CRFParams(4.0, 3.0, 20.0, 3.0, 1.0, 3, 5)
    want = np.asarray(crf.mean_field(probs, image, params, unroll=False))
    got = np.asarray(crf.mean_field(probs, image, params, unroll=True))
    np.testing.assert_array_equal(np.asarray(crf.mean_field(probs, image, params)), want)  # CPU
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(want - np.asarray(probs)).max() > 0.05  # the CRF did change them
    rows = m.main(
        [
            "--size",
            "8",
            "--classes",
            "3",
            "--batch",
            "1",
            "--windows",
            "3",
            "--iterations",
            "2",
            "--repeats",
            "1",
        ]
    )
    assert [(r["variant"], r["window"], r["batch"]) for r in rows] == [
        ("scan", 3, 1),
        ("unrolled", 3, 1),
    ]
    assert all(r["median_s"] > 0 for r in rows)
    assert "| unrolled | 3 | 1 |" in capsys.readouterr().out
