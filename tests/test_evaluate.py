"""python -m jaxseg.evaluate on a trained run: equal to training's own evaluation, slide +
flip, best checkpoint, reports, and refusals."""

import json
import os

import pytest
from PIL import Image

from jaxseg import checkpoint, evaluate


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_whole_mode_evaluate_equals_the_runs_last_val_miou(membrane_run, capsys):
    workdir, _ = membrane_run
    report = evaluate.main(["--workdir", workdir])
    last = [r for r in _rows(workdir) if "val/miou" in r][-1]
    assert report["checkpoint_step"] == last["step"] == 6
    assert report["scores"]["miou"] == last["val/miou"]  # exactly: the same function
    assert report["scores"]["pixel_acc"] == last["val/pixel_acc"]
    out = capsys.readouterr().out
    assert "membrane" in out and "mean" in out  # the per-class table
    path = os.path.join(workdir, "eval", "val_step6_whole.json")
    with open(path) as f:
        saved = json.load(f)
    assert saved["scores"]["miou"] == last["val/miou"]
    assert set(saved["scores"]["per_class"]["cell"]) >= {"iou", "dice", "precision", "recall"}
    assert {"boundary_iou", "ece"} <= set(saved["scores"]["per_class"]["membrane"])
    assert sum(map(sum, saved["confusion"])) == 5 * 512 * 512  # every val pixel counted once
    assert saved["inference"]["mode"] == "whole" and saved["images_per_s"] > 0
    # One batch (5 images, batch 8): it compiles, so there is no stall to measure.
    assert saved["input_stall"] is None and "input stall" not in out
    assert {"jax", "flax", "jaxseg"} <= set(saved["versions"])
    png = Image.open(path.replace(".json", "_confusion.png"))
    assert png.mode == "RGB" and png.width > 100


def test_slide_and_flip_on_the_best_checkpoint(membrane_run, tmp_path):
    workdir, _ = membrane_run
    out = tmp_path / "slide.json"
    report = evaluate.main(
        [
            f"--workdir={workdir}",
            "--checkpoint=best",
            "--config.eval.mode=slide",
            "--config.eval.crop_size=(256, 256)",
            "--config.eval.stride=(170, 170)",
            "--config.eval.flip=True",
            f"--out={out}",
        ]
    )
    rows = [r for r in _rows(workdir) if "val/miou" in r]
    best = max(rows, key=lambda r: (r["val/miou"], r["step"]))["step"]
    assert report["checkpoint_step"] == best == checkpoint.choose_step(workdir, "best")
    saved = json.loads(out.read_text())
    assert saved["inference"] == {
        "mode": "slide",
        "scales": [1.0],
        "flip": True,
        "crop_size": [256, 256],
        "stride": [170, 170],
        "window_batch": 8,
        "size": [512, 512],
        "shorter_side": 0,
        "batch_size": 8,
    }
    assert 0 <= saved["scores"]["miou"] <= 1


@pytest.mark.parametrize(
    "args, says",
    [
        (["--config.model.depth=2"], "model.depth cannot change here"),
        (["--config.data.mean=(0.5, 0.5, 0.5)"], "data.mean belongs to the trained model"),
        (["--config.eval.crop_size=(64, 64)"], "eval.crop_size is set but eval.mode is 'whole'"),
        (["--split=test"], "membrane dataset has no test split"),
        (["--checkpoint=4"], "--checkpoint=4: not a checkpoint"),
        (["--config.eval.mode=tiles"], "eval.mode='tiles'"),
    ],
)
def test_mistakes_are_one_line_exit_2(membrane_run, capsys, args, says):
    workdir, _ = membrane_run
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--workdir", workdir, *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def test_missing_workdir_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--workdir", str(tmp_path / "nope")])
    assert "nope" in capsys.readouterr().err
