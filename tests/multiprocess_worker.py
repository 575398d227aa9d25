"""One of two processes for tests/test_multiprocess.py (4 fake CPU devices each).

Usage: python tests/multiprocess_worker.py PROCESS_ID PORT OUT.json
"""

import json
import os
import sys

import numpy as np


class IndexSource:
    """Example i is an image filled with i (mod 256 in channel 0, i // 256 in channel 1)."""

    class_names = ("a", "b")

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image = np.zeros((4, 4, 3), np.uint8)
        image[..., 0], image[..., 1] = i % 256, i // 256
        return {"image": image, "mask": np.zeros((4, 4), np.uint8)}


class StripeSource(IndexSource):
    """Masks of three classes in example-dependent stripes (class counts differ by example)."""

    class_names = ("a", "b", "c")

    def __getitem__(self, i):
        mask = np.zeros((4, 4), np.uint8)
        mask[: i % 4] = 1
        mask[:, : (i // 4) % 3] = 2
        return {"image": super().__getitem__(i)["image"], "mask": mask}


def _ids(images):
    return (images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 0, 1].astype(int)).tolist()


def main():
    # Here, not at import: the test imports StripeSource without touching its own jax.
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    from jaxseg import sharding
    from jaxseg.data.pipeline import eval_batches, train_iterator

    mesh = sharding.make_mesh()
    per_process = sharding.check_batch_size(16, mesh)
    # Training: one epoch of this process's shard (40 examples -> 20 each -> 5 batches of 4).
    it = train_iterator(
        IndexSource(40), batch_size=4, seed=3, num_classes=2, crop_size=(4, 4), hflip=False
    )
    local = [next(it) for _ in range(5)]
    train_ids = sum((_ids(b["image"]) for b in local), [])
    batch = sharding.to_global(local[0], mesh)
    total = jax.jit(lambda x: x.astype(np.float32).sum(), out_shardings=sharding.replicated(mesh))(
        batch["image"]
    )
    # Evaluation: 13 examples, 4 per process per batch: uneven on purpose.
    eval_ids, eval_batch_count = [], 0
    for b in eval_batches(IndexSource(13), batch_size=4, pad_to=(4, 4), num_classes=2):
        eval_ids += [i for i, v in zip(_ids(b["image"]), b["valid"], strict=True) if v]
        eval_batch_count += 1
        sharding.to_global(b, mesh)  # every process must be able to assemble every batch
    # Class weights: each process counts its share, the sums are exact, process 0 writes.
    from jaxseg.class_weights import class_weights

    workdir = os.path.join(os.path.dirname(out), "weights_run")
    weights = class_weights(StripeSource(23), 3, "median", workdir=workdir, progress=False).tolist()
    with open(out, "w") as f:
        json.dump(
            {
                "class_weights": weights,
                "process_count": jax.process_count(),
                "device_count": jax.device_count(),
                "per_process_batch": per_process,
                "train_ids": train_ids,
                "global_shape": list(batch["image"].shape),
                "global_sum": float(total),
                "eval_ids": eval_ids,
                "eval_batches": eval_batch_count,
            },
            f,
        )
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
