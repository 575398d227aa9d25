"""benchmarks/aot_table.py: the committed AOT records make the table docs/benchmarks.md shows."""

import json
import os

import benchmark_scripts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS = os.path.join(ROOT, "docs", "aot", "2026-12-07-spatial", "records.jsonl")


def _records():
    with open(RECORDS) as f:
        return [json.loads(line) for line in f]


def test_docs_show_the_table_of_the_committed_records():
    table = benchmark_scripts.load("aot_table").table(_records())
    with open(os.path.join(ROOT, "docs", "benchmarks.md")) as f:
        assert table in f.read()


def test_rows_read_memory_and_the_compilers_need():
    aot_table = benchmark_scripts.load("aot_table")
    rows = {
        (r["aot"], r["model"], aot_table.spatial(r)): aot_table.row(r).split(" | ")
        for r in _records()
    }
    # v5e-8, 8 images per data replica: DeepLabV3+ fits only with the height split 4 ways.
    assert rows["tpu:v5e-8", "deeplabv3plus", 1][6:10] == ["out of memory", "-", "-", "41.10G"]
    assert rows["tpu:v5e-8", "deeplabv3plus", 4][1:8] == [
        "DeepLabV3+ R101 OS8", "4", "2", "16", "8", "compiled", "15.76 (98.5%)"
    ]  # fmt: skip
    # Records from before the `spatial` field take it from their command.
    assert aot_table.spatial({"command": "x --config.mesh.spatial=2 --y"}) == 2
    assert aot_table.spatial({"command": "x"}) == 1
