"""The PyTorch throughput reference (benchmarks/): same networks as jaxseg, and it runs.

Skips without torch (CI installs it: the parity extra). The reference and the compare driver run as
subprocesses, as they do for real: each framework owns the process.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from jaxseg.models import MODELS, build_model
from tests.torch_support import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(REPO, "benchmarks")
TINY = ["--size", "32x32", "--batch", "8", "--steps", "2", "--warmup", "1"]


@pytest.fixture(scope="module")
def torch_models():
    torch()
    spec = importlib.util.spec_from_file_location(
        "torch_models", os.path.join(BENCHMARKS, "torch_models.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jax_params(name: str, num_classes: int, **options) -> int:
    model = build_model(name, num_classes, **options)
    x = jnp.zeros((1, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    return sum(p.size for p in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize(
    "classes, base_width, depth, up_mode, expected",
    [
        (5, 16, 4, "transpose", 1_942_645),
        (5, 16, 4, "bilinear", 1_812_085),
        (21, 64, 4, "transpose", 31_038_933),
        (5, 8, 2, "transpose", 29_661),
    ],
)
def test_unet_has_jaxseg_unet_parameter_count(
    torch_models, classes, base_width, depth, up_mode, expected
):
    options = {"base_width": base_width, "depth": depth, "up_mode": up_mode}
    model = torch_models.build("unet", classes, **options)
    assert torch_models.count_params(model) == expected
    assert jax_params("unet", classes, **options) == expected


# Counts for 21 classes; torchvision's where it has the model (DESIGN.md pins them).
OTHERS = [
    ("deeplabv3plus", {"backbone": "resnet50", "output_stride": 16}, 40_352_181),
    ("deeplabv3", {"backbone": "resnet50", "output_stride": 8, "aux_head": True}, 42_004_074),
    ("fcn", {"backbone": "resnet50", "aux_head": True}, 35_322_218),
    ("pspnet", {"backbone": "resnet50", "aux_head": True}, 48_957_802),
    ("lraspp", {}, 3_221_538),
    ("segformer", {"backbone": "mit_b0"}, 3_719_541),
    ("segformer", {"backbone": "mit_b2"}, 27_362_773),
]


@pytest.mark.parametrize("name, options, expected", OTHERS, ids=[f"{n}-{o}" for n, o, _ in OTHERS])
def test_other_models_have_jaxseg_parameter_counts(torch_models, name, options, expected):
    assert torch_models.count_params(torch_models.build(name, 21, **options)) == expected
    if name not in MODELS:
        pytest.skip(f"jaxseg has no {name!r} yet")
    assert jax_params(name, 21, **options) == expected


def test_torch_reference_trains_a_tiny_unet_eagerly(tmp_path):
    torch()
    results = tmp_path / "torch.jsonl"
    command = [sys.executable, os.path.join(BENCHMARKS, "torch_reference.py"), "--model=unet"]
    command += ["--base-width=8", "--depth=2", "--classes=5", *TINY, "--no-compile"]
    out = subprocess.run(
        command + [f"--results={results}"], capture_output=True, text=True, check=True
    ).stdout
    (r,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert (r["framework"], r["variant"], r["model"], r["mode"]) == (
        "torch",
        "eager",
        "unet",
        "train",
    )
    assert (r["params"], r["batch"], r["size"], r["dtype"]) == (29_661, 8, [32, 32], "float32")
    assert 0 < r["median_ms"] <= r["p90_ms"]
    assert r["images_per_s"] == pytest.approx(8 / (r["median_ms"] / 1e3))
    # torch's counter includes the padding taps XLA's analysis leaves out: forward
    # 102,760,448 FLOPs; backward about twice that.
    assert 2.5 < r["flops_per_step"] / 102_760_448 < 3.5
    assert f"{r['images_per_s']:.2f} images/s" in out


def test_compare_driver_prints_jaxseg_torch_and_their_ratio(tmp_path):
    torch()
    results = tmp_path / "compare.jsonl"
    command = [sys.executable, os.path.join(BENCHMARKS, "compare.py"), "--model=unet"]
    command += [f"--config={REPO}/experiments/unet.py:quick", "--config.model.depth=2"]
    command += ["--config.model.base_width=8", "--mode=infer", *TINY, "--no-compile"]
    out = subprocess.run(
        command + [f"--results={results}"], capture_output=True, text=True, check=True
    ).stdout
    jax_record, torch_record = [json.loads(line) for line in results.read_text().splitlines()]
    assert (jax_record["framework"], torch_record["framework"]) == ("jaxseg", "torch")
    assert jax_record["params"] == torch_record["params"] == 29_661
    assert torch_record["num_classes"] == jax_record["num_classes"] == 5
    ratio = float(re.search(r"ratio jaxseg / max\(torch\): ([\d.]+)", out)[1])
    expected = jax_record["images_per_s"] / torch_record["images_per_s"]
    assert abs(ratio - expected) <= 0.0005 + 1e-9  # printed with 3 decimals
    assert re.search(r"^  jaxseg\s+29,661\s", out, re.M)
    assert re.search(r"^  torch eager\s+29,661\s", out, re.M)
