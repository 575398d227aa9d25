"""Plug-ins as a new user writes them: README's "Add your own model / dataset / loss"
files, run as written from a folder outside the checkout, trained and scored through the
command line; options of the plug-ins typed and checked like the built-ins'."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_files() -> dict[str, str]:
    """{file name: source} of the README's python blocks that start with '# NAME.py'."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    blocks = re.findall(r"```python\n# (\w+\.py)\n(.*?)```", text, re.S)
    return dict(blocks)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    files = readme_files()
    assert set(files) == {"tinynet.py", "blobs.py", "brier.py", "exp.py"}, sorted(files)
    for name, source in files.items():
        (folder / name).write_text(source)
    return folder


def run(args, cwd):
    env = dict(os.environ, PYTHONPATH="")  # nothing of the checkout but the installed package
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def test_readme_plugins_train_and_evaluate(plugin_dir):
    workdir = plugin_dir / "runs" / "tiny"
    out = run(
        [
            "jaxseg.train",
            "--config",
            "exp.py",
            "--config.model.width=6",
            "--config.data.n=32",
            "--config.loss.brier.scale=2.0",
            f"--workdir={workdir}",
        ],
        plugin_dir,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"] == {"name": "tinynet", "width": 6, "pretrained": ""}
    assert saved["data"]["n"] == 32 and "num_val" not in saved["data"]
    assert saved["loss"]["brier"] == {"scale": 2.0}
    plugins = json.loads((workdir / "plugins.json").read_text())
    assert sorted(p["module"] for p in plugins) == ["blobs", "brier", "tinynet"]
    assert all(p["path"] == str(plugin_dir) for p in plugins)
    trained = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    miou = [r["val/miou"] for r in trained if "val/miou" in r]
    losses = [r["train/loss"] for r in trained if "train/loss" in r]
    assert losses[-1] < losses[0], losses  # it learns

    # evaluate from another folder: the plug-ins come back through plugins.json
    out = run(["jaxseg.evaluate", f"--workdir={workdir}"], ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    reports = list((workdir / "eval").glob("*.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["scores"]["miou"] == pytest.approx(miou[-1], abs=1e-6)


@pytest.mark.parametrize(
    "override, says",
    [
        (
            "--config.model.widht=6",
            ["'model.widht'", "model 'tinynet' does not take it", "model.width"],
        ),
        ("--config.model.backbone=resnet50", ["'model.backbone'", "'tinynet' does not take"]),
        ("--config.data.root=/data", ["'data.root'", "dataset 'blobs' does not take it"]),
        ("--config.loss.brier.scal=2", ["'loss.brier.scal'", "loss.brier.scale"]),
        ("--config.model.width=wide", ["model.width"]),
    ],
)
def test_plugin_option_mistakes_are_one_line_exit_2(plugin_dir, override, says):
    out = run(["jaxseg.train", "--config", "exp.py", override], plugin_dir)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert all(s in lines[0] for s in says), lines[0]
