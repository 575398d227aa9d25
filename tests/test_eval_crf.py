"""eval.crf: the config's dense-CRF switch and parameters reach inference.Settings (evaluate,
predict, export and training's evaluation share it), invalid values are refused naming the
key, they change freely on resume, and evaluate with the CRF on changes predictions."""

import json
import os

import numpy as np
import pytest

from jaxseg import cli, config_checks, configs, evaluate, export, recipe, sharding
from jaxseg import workdir as run_files
from jaxseg.crf import CRFParams
from jaxseg.segmenter import Segmenter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET = os.path.join(ROOT, "experiments", "unet.py") + ":quick"


def test_defaults_are_deeplab_largefov_and_off():
    crf = configs.base_config().eval.crf
    assert crf.enabled is False
    assert (
        crf.bilateral_weight,
        crf.bilateral_xy_std,
        crf.bilateral_rgb_std,
        crf.spatial_weight,
        crf.spatial_xy_std,
        crf.iterations,
        crf.window,
    ) == (4.0, 121.0, 5.0, 3.0, 3.0, 10, 11)
    assert recipe.inference_settings(cli.load_experiment(UNET)).crf is None


def test_config_reaches_settings_and_every_inference_entry():
    config = cli.load_experiment(
        UNET,
        "--config.eval.crf.enabled=True",
        "--config.eval.crf.window=5",
        "--config.eval.crf.iterations=3",
        "--config.eval.crf.bilateral_rgb_std=13",
    )
    config_checks.check_options(config)
    settings = recipe.inference_settings(config)
    assert settings.crf == CRFParams(4.0, 121.0, 13.0, 3.0, 3.0, iterations=3, window=5)
    assert settings.describe()["crf"]["bilateral_rgb_std"] == 13.0
    # predict, export and the Segmenter API take exactly these keys.
    assert {"eval.crf.enabled", *(f"eval.crf.{k}" for k in CRFParams.__dataclass_fields__)} <= set(
        config_checks.INFERENCE_FIELDS
    )
    # Training's periodic evaluation binds the same settings into its eval step.
    parts = recipe.build(config, mesh=sharding.make_mesh())
    assert parts.eval_step.keywords["settings"] == parts.inference == settings


def test_predict_and_export_take_the_crf(membrane_run, tmp_path):
    workdir, _ = membrane_run
    crf = {"crf.enabled": True, "crf.window": 3, "crf.iterations": 2}
    seg = Segmenter.from_workdir(workdir, eval=crf)
    assert seg.settings.crf == CRFParams(4.0, 121.0, 5.0, 3.0, 3.0, iterations=2, window=3)
    manifest = export.export_run(
        workdir,
        str(tmp_path / "e"),
        size=(64, 64),
        platforms=("cpu",),
        overrides={f"eval.{k}": v for k, v in crf.items()},
        validate_count=2,
    )
    assert manifest["inference"]["crf"]["window"] == 3
    assert manifest["validation"]["max_logit_diff"] < 1e-4
    assert manifest["validation"]["equal_labels"] == 1.0
    with pytest.raises(configs.ConfigError, match="onnx exports without eval.crf"):
        export.export_onnx(seg, (64, 64), "labels", str(tmp_path / "m.onnx"))


@pytest.mark.parametrize(
    "override, says",
    [
        ("--config.eval.crf.window=4", "eval.crf.window=4: must be odd and >= 3"),
        ("--config.eval.crf.spatial_xy_std=0", "eval.crf.spatial_xy_std=0"),
        ("--config.eval.crf.bilateral_weight=-1", "eval.crf.bilateral_weight=-1"),
        ("--config.eval.crf.iterations=0", "eval.crf.iterations=0"),
    ],
)
def test_invalid_values_are_refused_naming_the_key(override, says):
    config = cli.load_experiment(UNET, "--config.eval.crf.enabled=True", override)
    with pytest.raises(configs.ConfigError, match=says.replace("(", r"\(")):
        recipe.inference_settings(config)


def test_crf_parameters_without_the_switch_are_refused():
    config = cli.load_experiment(UNET, "--config.eval.crf.iterations=5")
    with pytest.raises(
        configs.ConfigError, match="eval.crf.iterations is set but eval.crf.enabled is False"
    ):
        config_checks.check_options(config)


def test_eval_crf_changes_freely_on_resume():
    saved = cli.load_experiment(UNET)
    config = cli.load_experiment(
        UNET, "--config.eval.crf.enabled=True", "--config.eval.crf.window=7"
    )
    assert run_files.training_changes(saved, config) == {}


def test_evaluate_with_the_crf_runs_and_changes_predictions(membrane_run):
    workdir, _ = membrane_run
    plain = evaluate.main(["--workdir", workdir])
    crf = evaluate.main(
        [
            "--workdir",
            workdir,
            "--config.eval.crf.enabled=True",
            "--config.eval.crf.window=5",
            "--config.eval.crf.iterations=5",
        ]
    )
    with open(os.path.join(workdir, "eval", "val_step6_whole_crf.json")) as f:
        saved = json.load(f)
    assert saved["inference"]["crf"] == {
        "bilateral_weight": 4.0,
        "bilateral_xy_std": 121.0,
        "bilateral_rgb_std": 5.0,
        "spatial_weight": 3.0,
        "spatial_xy_std": 3.0,
        "iterations": 5,
        "window": 5,
    }
    assert "crf" not in plain["inference"]
    before, after = np.asarray(plain["confusion"]), np.asarray(crf["confusion"])
    assert before.sum() == after.sum() == 5 * 512 * 512  # every pixel, once
    changed = np.abs(after - before).sum() // 2  # pixels that moved between cells, at least
    assert changed > 1000, (before, after)
