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
