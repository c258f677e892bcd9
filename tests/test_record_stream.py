"""Records as a Ray Data dataset read on the workers: the same records as the in-process readers, GEdit-Bench
shards one read task each, a large manifest with its bad lines as error records."""
import json

import pyarrow.parquet as pq

from pipeline.record_stream import CHUNK, STREAM_SCHEMA, count_records, input_files, record_dataset
from pipeline.records import RECORD_SCHEMA
from pipeline.sources import read_records
from test_pipeline_sources import gedit_table


def test_gedit_shards_stream_as_the_reader_reads_them(ray_session, tmp_path):
    (tmp_path / "shards").mkdir()
    for i in range(2):
        pq.write_table(gedit_table(with_raw=False), tmp_path / "shards" / f"train-0000{i}-of-00002.parquet")
    fmt, files = input_files(str(tmp_path / "shards"), "auto")
    assert fmt == "gedit" and len(files) == 2
    ds = record_dataset(str(tmp_path / "shards"))
    rows = sorted(ds.take_all(), key=lambda r: (r["id"], r["image_bytes"]))
    expected = sorted(read_records(str(tmp_path / "shards"), fmt="gedit"), key=lambda r: (r["id"], r["image_bytes"]))
    assert [(r["id"], r["instruction"], bytes(r["image_bytes"])) for r in rows] == \
           [(r["id"], r["instruction"], r["image_bytes"]) for r in expected]


def test_a_large_manifest_streams_with_its_errors(ray_session, tmp_path):
    n = 2 * CHUNK + 7
    lines = [json.dumps({"id": f"r{i}", "image": "x.png", "instruction": "do"}) for i in range(n)]
    lines[5] = "{not json"
    (tmp_path / "m.jsonl").write_text("\n".join(lines))
    ds = record_dataset(str(tmp_path / "m.jsonl"))
    assert ds.count() == n and count_records(str(tmp_path / "m.jsonl")) == (n, 1)
    assert ds.schema().base_schema == STREAM_SCHEMA and STREAM_SCHEMA.remove(len(RECORD_SCHEMA)) == RECORD_SCHEMA
    from_end = {r["id"]: r["from_end"] for r in ds.select_columns(["id", "from_end"]).take_all()}
    assert from_end["r0"] == n - 1 and from_end[f"r{n - 1}"] == 0 and from_end["r1500"] == n - 1501
    bad = ds.filter(lambda r: r["error"] is not None).take_all()
    assert len(bad) == 1 and "invalid JSON on line 6" in bad[0]["error"]
