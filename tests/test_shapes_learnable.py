"""`shapes` is a segmentation task, not a colour lookup: a per-pixel linear model fails it,
the quick U-Net solves it (the README's quickstart)."""

import os

import pytest

from jaxseg import cli
from jaxseg.train import train_and_evaluate

UNET = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "unet.py"
)


def _run(tmp_path, *overrides):
    config = cli.load_experiment(f"{UNET}:quick", *overrides)
    return train_and_evaluate(config, str(tmp_path))["scores"]


def test_per_pixel_linear_model_stays_below_half_miou(tmp_path):
    scores = _run(
        tmp_path,
        "--config.model.name=linear",
        "--config.total_steps=300",
        "--config.optim.lr=0.01",
        "--config.eval_every=0",
        "--config.data.num_val=96",
    )
    assert scores["miou"] < 0.5, scores["miou"]
    assert scores["pixel_acc"] > 0.5  # it trained: it learned that most pixels are background


@pytest.mark.slow
def test_quick_unet_passes_point_eight_miou(tmp_path):
    scores = _run(tmp_path)
    assert scores["miou"] > 0.8, scores["miou"]
