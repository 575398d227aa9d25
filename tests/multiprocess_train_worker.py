"""One of two training processes for tests/test_multiprocess.py (4 fake CPU devices each).

Usage: python tests/multiprocess_train_worker.py PROCESS_ID PORT WORKDIR
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402

from jaxseg import cli

jax.config.update("jax_cpu_collectives_implementation", "gloo")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config.data.image_size=(16, 16)",
    "--config.eval.size=(16, 16)",
    "--config.data.num_val=8",
    "--config.batch_size=8",
    "--config.eval.batch_size=8",
    "--config.model.base_width=4",
    "--config.model.depth=2",
    "--config.total_steps=30",
    "--config.log_every=1",
    "--config.eval_every=0",
    "--config.checkpoint_every=1000",
]


def main():
    process_id, port, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    from absl import flags

    from jaxseg.train import train_and_evaluate

    flags.FLAGS.mark_as_parsed()
    config = cli.load_experiment(os.path.join(ROOT, "experiments", "unet.py:quick"), *TINY)
    result = train_and_evaluate(config, workdir)
    print(f"process {process_id} ended at step {result['step']}", flush=True)


if __name__ == "__main__":
    main()
