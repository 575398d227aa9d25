"""python -m jaxseg.evaluate on a trained run: equal to training's own evaluation, slide +
flip, best checkpoint, reports, and refusals."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from jaxseg import checkpoint, evaluate, recipe
from jaxseg.segmenter import Segmenter
from tests import reference_inference as R


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _brute_force_confusion(workdir, which, predict):
    """i64[2,2] (rows truth) counted with numpy over predictions made here: the trained
    model applied image by image through tests/reference_inference.py.
    predict(logits, x): the scores f32[h,w,K] of normalised x given the model's logits."""
    live = Segmenter.from_workdir(workdir, checkpoint=which)
    logits = R.forward(live.model, live.variables)
    source = recipe.make_source(live.config, "val")
    confusion = np.zeros((2, 2), np.int64)
    for i in range(len(source)):
        example = source[i]
        labels = predict(logits, R.normalised(example["image"], live.mean, live.std)).argmax(-1)
        truth = np.asarray(example["mask"], np.int64)
        valid = truth != 255
        confusion += np.bincount(2 * truth[valid] + labels[valid], minlength=4).reshape(2, 2)
    return confusion


def _miou(confusion):
    """By hand: TP / (TP + FP + FN) per class in the truth or the prediction, averaged."""
    cm = np.asarray(confusion, np.float64)
    unions = [cm[k].sum() + cm[:, k].sum() - cm[k, k] for k in range(len(cm))]
    return np.mean([cm[k, k] / u for k, u in enumerate(unions) if u > 0])


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
    # Against predictions and counts made here (near-ties may break either way).
    brute = _brute_force_confusion(workdir, "latest", lambda logits, x: logits(x))
    assert np.abs(np.asarray(saved["confusion"]) - brute).sum() <= 5, (saved["confusion"], brute)
    assert report["scores"]["miou"] == pytest.approx(_miou(brute), abs=1e-5)
    assert report["scores"]["miou"] == pytest.approx(_miou(saved["confusion"]), abs=1e-12)
    assert brute[:, 1].sum() > 0 and brute[:, 0].sum() > 0  # both classes predicted
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

    # MMSeg's slide loop on the image and on its mirror, softmax averaged, made here.
    def slide_and_flip(logits, x):
        return R.tta(lambda v: R.slide(logits, v, (256, 256), (170, 170)), x, flip=True)

    brute = _brute_force_confusion(workdir, "best", slide_and_flip)
    assert np.abs(np.asarray(saved["confusion"]) - brute).sum() <= 5, (saved["confusion"], brute)
    assert saved["scores"]["miou"] == pytest.approx(_miou(brute), abs=1e-5)


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
