"""Test set-up: 8 fake CPU devices, so sharding is exercised on every run.

XLA_FLAGS must be set before jax is first imported, hence at the top of conftest.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent compilation cache for the session (and the subprocesses tests start): the
# suite trains the same tiny programs again and again (resume, crash and config-change
# tests, the CLI), and a repeated U-Net run drops from about a minute of compiling to 4 s.
# A fresh directory per session, so CI never reads another run's programs; pytest-xdist's
# workers (`-n 2`, the README's command) inherit it from the controller, so they share it.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

_CACHE = tempfile.mkdtemp(prefix="jaxseg-test-xla-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

from absl import flags  # noqa: E402

# grain worker processes read absl flags; mark them parsed as an app would.
flags.FLAGS.mark_as_parsed()


import gc  # noqa: E402

import pytest  # noqa: E402

from jaxseg import cli  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drops jit caches after each test module. One process walks a dozen 40-130 M
    parameter models; without this, the slow experiment walk grew past 24 GB and was
    OOM-killed (each run alone peaks under 4 GB)."""
    yield
    import jax

    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def membrane_run(tmp_path_factory):
    """A narrow U-Net trained 6 steps on the real membrane images: a workdir with
    config.json, dataset.json, metrics.jsonl and checkpoints at steps 3 and 6, each
    evaluated (so "best" is defined). Returns (workdir, train_and_evaluate's result)."""
    from jaxseg.train import train_and_evaluate

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    workdir = tmp_path_factory.mktemp("membrane_run")
    config = cli.load_experiment(
        os.path.join(root, "experiments", "unet_membrane.py") + ":quick",
        "--config.model.base_width=4",
        "--config.data.image_size=(64, 64)",
        "--config.total_steps=6",
        "--config.log_every=3",
        "--config.eval_every=3",
        "--config.checkpoint_every=3",
        "--config.optim.warmup_steps=1",
    )
    return str(workdir), train_and_evaluate(config, str(workdir))
