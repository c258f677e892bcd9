"""Result rows written by the CPU task that made them (pipeline.result_files): one Parquet file per batch, named
by its (record, configuration) pairs so that a retried task rewrites the same file; nothing for an empty batch;
storage's retries absorb injected write faults as for every other write."""
import os

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.result_files import file_name, write_rows


def _rows(records, configs=("c1", "c2")):
    pairs = [(r, c) for r in records for c in configs]
    return pa.table({"record_id": [r for r, _ in pairs], "config_id": [c for _, c in pairs],
                     "status": ["ok"] * len(pairs)})


def test_a_batch_becomes_one_file_named_by_its_pairs(tmp_path):
    rows = _rows(["r1", "r2"])
    counts = write_rows(rows, str(tmp_path), "run-abc", None)
    assert counts.to_pylist() == [{"rows": 4}]
    [name] = os.listdir(tmp_path)
    assert name == file_name("run-abc", rows) and name.startswith("run-abc_") and name.endswith(".parquet")
    assert pq.read_table(tmp_path / name).equals(rows)
    write_rows(rows, str(tmp_path), "run-abc", None)   # a retried task: the same file again, not a second one
    assert os.listdir(tmp_path) == [name]
    assert file_name("run-abc", _rows(["r1", "r3"])) != name


def test_an_empty_batch_writes_nothing_and_faults_are_retried(tmp_path):
    assert write_rows(_rows([]), str(tmp_path), "run-abc", None).num_rows == 0 and not os.listdir(tmp_path)
    storage = {"inject_write_faults": 0.5, "retries": 12, "retry_base_delay_s": 0.001}
    for i in range(8):
        write_rows(_rows([f"r{i}"]), str(tmp_path), "run-abc", storage)
    assert len(os.listdir(tmp_path)) == 8
