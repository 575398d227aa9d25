import glob
import json
import os
import subprocess
import sys

import pytest

from jaxseg import cli, configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET = os.path.join(ROOT, "experiments", "unet.py")
EXPERIMENTS = sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py")))


def test_loads_experiment_with_arg_and_overrides():
    c = cli.load_experiment(
        f"{UNET}:quick",
        "--config.optim.lr=0.02",
        "--config.data.image_size=(32, 48)",
        "--config.optim.nesterov",
        "--config.eval.scales",
        "(0.5, 1.0)",
    )
    assert c.optim.lr == 0.02
    assert c.data.image_size == (32, 48)
    assert c.optim.nesterov is True
    assert c.eval.scales == (0.5, 1.0)
    assert c.model.base_width == 16  # from :quick


def test_int_to_float_and_locked():
    c = cli.load_experiment(f"{UNET}:quick", "--config.optim.lr=1")
    assert c.optim.lr == 1.0 and isinstance(c.optim.lr, float)
    with pytest.raises(AttributeError):
        c.optim.new_field = 1


def test_experiments_cannot_add_fields():
    with pytest.raises(AttributeError):
        configs.base_config().optim.lrr = 0.1


def test_unknown_key_names_closest():
    with pytest.raises(configs.ConfigError, match=r"unknown config key 'optim.lrr'.*optim\.lr"):
        cli.load_experiment(UNET, "--config.optim.lrr=0.1")
    with pytest.raises(configs.ConfigError, match=r"unknown config key 'modl.depth'.*model\.depth"):
        cli.load_experiment(UNET, "--config.modl.depth=3")


@pytest.mark.parametrize(
    "override, key",
    [
        ("--config.total_steps=abc", "total_steps"),
        ("--config.total_steps=2.5", "total_steps"),
        ("--config.optim.nesterov=maybe", "optim.nesterov"),
        ("--config.data.image_size=64", "data.image_size"),
        ("--config.data.image_size=(32, 48.5)", "data.image_size"),
        ("--config.eval.crop_size=(32,)", "eval.crop_size"),
        ("--config.data.mean=(0.5, 0.5)", "data.mean"),
    ],
)
def test_wrong_type_names_key(override, key):
    with pytest.raises(configs.ConfigError, match=key.replace(".", r"\.")):
        cli.load_experiment(UNET, override)


def test_missing_file_and_bad_arg():
    with pytest.raises(configs.ConfigError, match="nope.py"):
        cli.load_experiment("nope.py")
    with pytest.raises(configs.ConfigError, match="unknown arg 'fast'"):
        cli.load_experiment(f"{UNET}:fast")


@pytest.mark.parametrize(
    "args, says",
    [
        (["--config.optim.lrr=0.1"], ["optim.lrr", "optim.lr"]),
        (["--config.total_steps=abc"], ["total_steps"]),
        (["--no_such_flag=1"], ["no_such_flag"]),
        (["--config.model.backbone=resnet101"], ["model.backbone", "'unet' does not take"]),
        (["--config.data.root=/data"], ["data.root", "'shapes' does not take"]),
        (["--config.eval.stride=(8, 8)"], ["eval.stride", "eval.mode is 'whole'"]),
    ],
)
def test_cli_mistake_is_one_line_and_exit_2(args, says):
    out = subprocess.run(
        [sys.executable, "-m", "jaxseg.train", "--config", f"{UNET}:quick", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("jaxseg.train: error:")
    assert all(s in lines[0] for s in says), lines[0]


@pytest.mark.parametrize("entry", ["train", "benchmark", "evaluate", "predict", "export"])
def test_help_lists_the_flags_of_each_entry(entry):
    out = subprocess.run(
        [sys.executable, "-m", f"jaxseg.{entry}", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "--workdir" in out.stdout and "--config" in out.stdout
    assert "Traceback" not in out.stderr


def test_json_round_trip_restores_tuples_for_every_experiment():
    for path in EXPERIMENTS:
        c = cli.load_experiment(path)
        back = configs.from_json(configs.to_json(c))
        assert back.to_dict() == c.to_dict(), path  # tuples stay tuples (lists would differ)
        assert isinstance(back.loss.terms[0], tuple) and isinstance(back.data.mean, tuple)


def test_from_json_names_unknown_keys_and_wrong_types():
    text = json.loads(configs.to_json(configs.base_config()))
    text["optim"]["lrr"] = 0.1
    with pytest.raises(configs.ConfigError, match=r"run/config.json.*optim\.lrr"):
        configs.from_json(json.dumps(text), "run/config.json")
    text = json.loads(configs.to_json(configs.base_config()))
    text["total_steps"] = "many"
    with pytest.raises(configs.ConfigError, match="total_steps"):
        configs.from_json(json.dumps(text))


def test_sections_hold_only_the_chosen_parts_options():
    c = configs.base_config(model="unet", data="shapes")
    assert "backbone" not in c.model and "output_stride" not in c.model
    assert "root" not in c.data and "tfds_name" not in c.data
    assert (c.data.num_train, c.data.num_val) == (10_000, 200)  # the shapes builder's defaults
    folder = configs.base_config(data="folder").data
    assert folder.root == "" and folder.split_ratio == 0.8 and "num_val" not in folder
    assert configs.base_config(loss=(("ohem", 1.0),)).loss.ohem.to_dict() == {
        "thresh": 0.7,
        "min_kept": 100000,
    }
    assert "ce" not in configs.base_config(loss=(("dice", 1.0),)).loss


def test_another_part_on_the_command_line_rebuilds_its_section():
    """deeplab.py sets model.backbone=resnet50 and output_stride=16 on deeplabv3plus: a new
    model keeps what it also takes, drops the rest; a new dataset gets its own fields and the
    other overrides of that section apply to it."""
    deeplab = os.path.join(ROOT, "experiments", "deeplab.py")
    c = cli.load_experiment(
        f"{deeplab}:quick",
        "--config.data.root=/data/x",  # before the dataset that takes it: order is free
        "--config.data.name=folder",
        "--config.model.name=fcn",
        "--config.data.class_names=('a', 'b')",
    )
    assert c.model.to_dict() == {
        "name": "fcn",
        "backbone": "resnet18",  # quick's setting, which fcn takes too
        "aux_head": False,
        "atrous_impl": "plain",
        "pretrained": "",
    }
    assert c.data.name == "folder" and c.data.root == "/data/x"
    assert c.data.class_names == ("a", "b") and "num_val" not in c.data
    assert c.data.image_size == (64, 64)  # the pipeline's fields stay
    c = cli.load_experiment(UNET, "--config.loss.terms=(('ce', 1.0), ('ohem', 0.5))")
    assert c.loss.ohem.thresh == 0.7 and c.loss.ce.label_smoothing == 0.0


def test_experiment_file_mistake_is_one_line_naming_file_and_key(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from jaxseg.configs import base_config\n\n\ndef get_config(arg=None):\n"
        "    c = base_config(model='unet')\n    c.model.backbone = 'resnet18'\n    return c\n"
    )
    with pytest.raises(configs.ConfigError) as info:
        cli.load_experiment(str(bad))
    message = str(info.value)
    assert message.startswith(f"{bad}:6: unknown config key 'model.backbone'"), message
    assert "model 'unet' does not take it" in message and "\n" not in message
    assert len(message) < 300, message


@pytest.mark.parametrize("positional", [False, True])
def test_stray_arguments_are_one_line_unless_the_entry_takes_them(positional, capsys):
    from absl import flags

    fv = flags.FlagValues()
    argv = ["--config", UNET, "--config.total_steps=3", "stray.png"]
    if positional:
        assert cli.parse_flags(fv, argv, prog="p", doc="", positional=True) == ["stray.png"]
        assert fv.config.total_steps == 3
        return
    with pytest.raises(SystemExit) as e:
        cli.parse_flags(fv, argv, prog="p", doc="")
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == "p: error: unexpected argument(s) stray.png"


def test_a_train_split_smaller_than_one_batch_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "jaxseg.train", "--config", f"{UNET}:quick"]
        + ["--config.data.num_train=6", "--config.batch_size=16", f"--workdir={tmp_path / 'w'}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "jaxseg.train: error: the train split of 'shapes' has 6 examples, fewer than one "
        "batch of 16: lower --config.batch_size"
    ]
