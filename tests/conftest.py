"""Test set-up: 8 fake CPU devices, so sharding is exercised on every run.

XLA_FLAGS must be set before jax is first imported, hence at the top of conftest.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # noqa: E402

# grain worker processes read absl flags; mark them parsed as an app would.
flags.FLAGS.mark_as_parsed()


import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drops jit caches after each test module. One process walks a dozen 40-130 M
    parameter models; without this, the slow experiment walk grew past 24 GB and was
    OOM-killed (each run alone peaks under 4 GB)."""
    yield
    import jax

    jax.clear_caches()
    gc.collect()
