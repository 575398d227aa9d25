"""benchmarks/stride_ceiling.py: the best stride-s map scores what it should on hand-made masks."""

import numpy as np

from tests import benchmark_scripts


def test_cell_aligned_masks_are_exact_and_a_thin_line_is_lost():
    ceiling = benchmark_scripts.load("stride_ceiling").ceiling
    masks = np.zeros((1, 16, 16), np.int32)
    # A band on the 4-pixel grid: bilinear blends between cells cross over exactly at the
    # cell borders. (A box would lose its corners: there three outside cells blend in.)
    masks[0, 4:12, :] = 1
    assert ceiling(masks, 4, 2)["miou"] == 1.0
    line = np.zeros((1, 16, 16), np.int32)
    line[0, :, 5] = 1  # one column of 16 pixels: a quarter of each stride-4 cell it crosses
    s = ceiling(line, 4, 2)
    # Class 1 never wins a cell's share (1/4 against 3/4), so it is never predicted:
    # IoU 0 for it, and background IoU 240 / 256.
    np.testing.assert_allclose(s["iou"], [240 / 256, 0.0])
