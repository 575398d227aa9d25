import json
import os
import subprocess
import sys

import pytest

from jaxseg import configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET = os.path.join(ROOT, "experiments", "unet.py")


def test_loads_experiment_with_arg_and_overrides():
    args = configs.parse_args(
        [
            "--config",
            f"{UNET}:quick",
            "--config.optim.lr=0.02",
            "--config.data.image_size=(32, 48)",
            "--config.optim.nesterov",
            "True",
            "--workdir=/tmp/w",
        ]
    )
    c = args.config
    assert c.optim.lr == 0.02
    assert c.data.image_size == (32, 48)
    assert c.optim.nesterov is True
    assert c.model.base_width == 16  # from :quick
    assert args.workdir == "/tmp/w"


def test_default_workdir_and_int_to_float():
    args = configs.parse_args([f"--config={UNET}:quick", "--config.optim.lr=1"])
    assert args.workdir == os.path.join("runs", "unet_quick")
    assert args.config.optim.lr == 1.0 and isinstance(args.config.optim.lr, float)


def test_config_is_locked():
    c = configs.parse_args(["--config", UNET]).config
    with pytest.raises(AttributeError):
        c.optim.new_field = 1


def test_experiments_cannot_add_fields():
    with pytest.raises(AttributeError):
        configs.base_config().optim.lrr = 0.1


def test_unknown_key_names_closest():
    with pytest.raises(configs.ConfigError, match=r"unknown config key 'optim.lrr'.*optim\.lr"):
        configs.parse_args(["--config", UNET, "--config.optim.lrr=0.1"])
    with pytest.raises(configs.ConfigError, match=r"unknown config key 'modl.depth'.*model\.depth"):
        configs.parse_args(["--config", UNET, "--config.modl.depth=3"])


@pytest.mark.parametrize(
    "override",
    [
        "--config.total_steps=abc",
        "--config.total_steps=2.5",
        "--config.optim.nesterov=1",
        "--config.data.image_size=64",
    ],
)
def test_wrong_type_names_key(override):
    key = override.split("=")[0][len("--config.") :]
    with pytest.raises(configs.ConfigError, match=f"config key '{key}' needs a"):
        configs.parse_args(["--config", UNET, override])


def test_missing_file_and_bad_arg():
    with pytest.raises(configs.ConfigError, match="nope.py"):
        configs.parse_args(["--config", "nope.py"])
    with pytest.raises(ValueError, match="unknown arg 'fast'"):
        configs.parse_args(["--config", f"{UNET}:fast"])


def test_cli_mistyped_key_is_one_line_and_nonzero():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxseg.train",
            "--config",
            f"{UNET}:quick",
            "--config.optim.lrr=0.1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "optim.lrr" in lines[0] and "optim.lr" in lines[0]
    assert "Traceback" not in out.stderr


def test_to_json_roundtrip():
    c = configs.parse_args(["--config", UNET]).config
    assert json.loads(configs.to_json(c))["optim"]["lr"] == c.optim.lr
