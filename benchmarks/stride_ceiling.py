"""The val mIoU a perfect output at stride s could reach on `shapes`, per image size.

A network whose logits live on a grid s times coarser than the image (DeepLabV3+'s decoder
at 4, a dilated ResNet's features at 8, the ASPP's at 16) is resized back bilinearly; the
best such map is the ground truth's class shares over each s x s cell. This script scores
exactly that (log of the shares, resized as the models resize, argmax) against the ground
truth of the val split the quick runs use, so it says whether a quick run's size leaves its
stride room (docs/benchmarks.md):

    python benchmarks/stride_ceiling.py --sizes 64 96 128 --strides 4 8 16
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import cli, metrics, recipe
from jaxseg.models.layers import resize


def ceiling(masks: np.ndarray, stride: int, num_classes: int) -> dict:
    """Scores (jaxseg.metrics.scores) of the best stride-`stride` map for masks i32[N,H,W]
    (H, W multiples of stride)."""
    n, h, w = masks.shape
    shares = jax.nn.one_hot(masks, num_classes).reshape(
        n, h // stride, stride, w // stride, stride, num_classes
    )
    shares = shares.mean(axis=(2, 4))  # [N, H/s, W/s, K]
    # log(0) would make every bilinear blend with an absent class -inf: a small floor.
    logits = resize(jnp.log(shares + 1e-3), (h, w))
    confusion = metrics.confusion_matrix(jnp.asarray(masks), logits.argmax(-1), num_classes)
    return metrics.scores(np.asarray(confusion))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--strides", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--num_val", type=int, default=100, help="val images (the quick runs')")
    args = parser.parse_args()
    print("| size | stride | mIoU | IoU per class (%) |")
    print("|---|---|---|---|")
    for size in args.sizes:
        config = cli.load_experiment(
            "experiments/unet.py",
            f"--config.data.image_size=({size}, {size})",
            f"--config.eval.size=({size}, {size})",
            f"--config.data.num_val={args.num_val}",
        )
        source = recipe.make_source(config, "val")
        masks = np.stack([np.asarray(source[i]["mask"]) for i in range(len(source))])
        for stride in args.strides:
            s = ceiling(masks, stride, len(source.class_names))
            per_class = " / ".join(f"{100 * v:.1f}" for v in s["iou"])
            print(f"| {size} | {stride} | {s['miou']:.4f} | {per_class} |")


if __name__ == "__main__":
    main()
