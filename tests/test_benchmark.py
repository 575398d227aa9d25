import os
import re

from jaxseg import benchmark

UNET = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "unet.py"
)


def test_data_only_reports_images_per_second_per_worker_count(capsys):
    benchmark.main(
        [
            "--config",
            f"{UNET}:quick",
            "--data-only",
            "--workers=0,1",
            "--batches=3",
            "--config.batch_size=8",
            "--config.data.image_size=(32, 32)",
        ]
    )
    out = capsys.readouterr().out
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)$", out, re.M)
    assert [int(w) for w, _ in rows] == [0, 1]
    assert all(float(rate) > 0 for _, rate in rows)
    assert "crops 32x32, batch 8" in out
