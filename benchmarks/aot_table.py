"""The markdown table of `python -m jaxseg.aot --results FILE` records, as docs/benchmarks.md
shows them: one row a compile, per-chip memory or the compiler's out-of-memory figure.

    python benchmarks/aot_table.py docs/aot/2026-12-07-spatial/records.jsonl
"""

import json
import re
import sys

NAMES = {
    ("deeplabv3plus", "resnet101", 8): "DeepLabV3+ R101 OS8",
    ("deeplabv3plus", "resnet50", 16): "DeepLabV3+ R50 OS16",
    ("segformer", "mit_b5", None): "SegFormer-B5",
    ("segformer", "mit_b2", None): "SegFormer-B2",
    ("segformer", "mit_b0", None): "SegFormer-B0",
}
HEADER = (
    "| slice | model | mesh.spatial | data replicas | global batch | images per data replica "
    "| status | memory GiB/chip (share of HBM) | temporaries GiB | rematerialized ops "
    "| XLA's need when out of memory | lower + compile s |"
)


def spatial(record: dict) -> int:
    """mesh.spatial of the compile: the record's field, or (records written before it had one)
    the --config.mesh.spatial flag of its command, else 1."""
    if record.get("spatial"):
        return record["spatial"]
    found = re.search(r"--config\.mesh\.spatial=(\d+)", record["command"])
    return int(found.group(1)) if found else 1


def model_name(record: dict) -> str:
    options = record["model_options"]
    key = (record["model"], options.get("backbone"), options.get("output_stride"))
    return NAMES.get(key, record["model"])


def row(record: dict) -> str:
    k = spatial(record)
    chips = record["device_count"]
    data = chips // k
    mem = record["memory"]
    if record["status"] == "compiled":
        total = f"{mem['total_bytes'] / 2**30:.2f} ({record['memory_share']:.1%})"
        temp, need = f"{mem['temp_bytes'] / 2**30:.2f}", ""
        remat = record.get("rematerialized")
        remat = "not recorded" if remat is None else remat  # records before the field
    else:
        total = temp = remat = "-"
        found = re.search(r"HLO temporaries \(([\d.]+G)\)", record["error"] or "")
        need = found.group(1) if found else (record["error"] or "")[:60]
    cells = [
        record["aot"].removeprefix("tpu:"),
        model_name(record),
        k,
        data,
        record["batch"],
        f"{record['batch'] / data:g}",
        record["status"].replace("_", " "),
        total,
        temp,
        remat,
        need,
        f"{record['lower_s']:.0f} + {record['compile_s']:.0f}",
    ]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(records: list[dict]) -> str:
    records = sorted(records, key=lambda r: (r["aot"], model_name(r), spatial(r)))
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    return "\n".join(lines + [row(r) for r in records])


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(table([json.loads(line) for line in f if line.strip()]))
