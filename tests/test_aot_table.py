"""benchmarks/aot_table.py: the committed AOT records make the table docs/benchmarks.md shows."""

import json
import os

import benchmark_scripts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS = os.path.join(ROOT, "docs", "aot", "2026-12-07-spatial", "records.jsonl")
REMAT = os.path.join(ROOT, "docs", "aot", "2026-12-07-remat", "records.jsonl")


def _records(path=RECORDS):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_docs_show_the_tables_of_the_committed_records():
    aot_table = benchmark_scripts.load("aot_table")
    with open(os.path.join(ROOT, "docs", "benchmarks.md")) as f:
        docs = f.read()
    assert aot_table.table(_records()) in docs
    assert aot_table.table(_records(REMAT)) in docs


def test_the_rerun_gave_the_same_memory_and_counted_rematerialization():
    first = {(r["aot"], r["model"], r["batch"]): r for r in _records()}  # batch names K
    for again in _records(REMAT):
        if again["model_options"]["backbone"] == "mit_b0":
            continue  # B0 was compiled only in the rerun
        before = first[again["aot"], again["model"], again["batch"]]
        assert before["memory"] == again["memory"]
        assert isinstance(again["rematerialized"], int)


def test_rows_read_memory_and_the_compilers_need():
    aot_table = benchmark_scripts.load("aot_table")
    rows = {
        (r["aot"], r["model"], aot_table.spatial(r)): aot_table.row(r).split(" | ")
        for r in _records()
    }
    # v5e-8, 8 images per data replica: DeepLabV3+ fits only with the height split 4 ways.
    assert rows["tpu:v5e-8", "deeplabv3plus", 1][6:11] == [
        "out of memory", "-", "-", "-", "41.10G"
    ]  # fmt: skip
    assert rows["tpu:v5e-8", "deeplabv3plus", 4][1:8] == [
        "DeepLabV3+ R101 OS8", "4", "2", "16", "8", "compiled", "15.76 (98.5%)"
    ]  # fmt: skip
    # Records from before the `spatial` field take it from their command.
    assert aot_table.spatial({"command": "x --config.mesh.spatial=2 --y"}) == 2
    assert aot_table.spatial({"command": "x"}) == 1
