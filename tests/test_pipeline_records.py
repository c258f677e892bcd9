"""pipeline.records: record validation, output schema, error rows."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.records import (
    RECORD_FIELDS,
    RECORD_SCHEMA,
    EditRecord,
    RecordError,
    base_row,
    check_row,
    error_row,
    new_record,
    output_columns,
    output_schema,
    rows_to_table,
    validate_record,
)

REQUIRED_COLUMNS = (
    "run_id record_id config_id model policy policy_params height width seed steps instruction "
    "output_uri status error runtime_s keep_ratio_mean keep_ratio_per_step tokens_processed psnr_bg "
    "ssim_bg mse_bg lpips_bg lpips_status psnr_vs_full ssim_vs_full lpips_vs_full clip_whole clip_edited "
    "clip_status structure_distance structure_status kept_per_step device started_at finished_at"
).split()

CONFIG = {
    "config_id": "abc123def456",
    "model": "flux-kontext",
    "policy": "tokendrop",
    "policy_params": {"omega": 0.4, "full_steps": 2},
    "height": 1024,
    "width": 1024,
    "seed": 3,
    "steps": 28,
    "guidance_scale": 2.5,
}


def test_output_schema_has_required_columns_and_types():
    for name in REQUIRED_COLUMNS:
        assert name in output_schema().names, name
    assert output_schema().field("keep_ratio_per_step").type == pa.list_(pa.float32())
    assert str(output_schema().field("keep_ratio_per_step").type) == "list<item: float>"
    assert output_schema().field("policy_params").type == pa.string()
    assert output_schema().field("tokens_processed").type == pa.int64()
    assert output_schema().field("started_at").type == pa.timestamp("us", tz="UTC")
    for metric in ("psnr_bg", "ssim_bg", "mse_bg", "lpips_bg", "psnr_vs_full", "ssim_vs_full", "lpips_vs_full",
                   "clip_whole", "clip_edited", "structure_distance"):
        assert output_schema().field(metric).type == pa.float64()
        assert output_schema().field(metric).nullable
    for status in ("lpips_status", "clip_status", "structure_status"):
        assert output_schema().field(status).type == pa.string()
    assert output_schema().field("kept_per_step").type == pa.list_(pa.int32())


def test_metric_columns_come_from_the_metrics_registry():
    import metrics

    schema = output_schema()
    declared = metrics.output_columns()
    assert [c.name for c in declared] == [n for n in schema.names if any(n == c.name for c in declared)]
    for column in declared:
        assert schema.field(column.name).type == column.arrow and schema.field(column.name).nullable
    failed = error_row(new_record(id="r", instruction="i"), CONFIG, RuntimeError("x"), run_id="run")
    for metric in metrics.registered():
        if metric.status_column:   # every metric says why an error row has no value
            assert failed[metric.status_column] == "not computed: edit failed", metric.name


def test_record_schema_matches_record_fields():
    assert tuple(RECORD_SCHEMA.names) == RECORD_FIELDS
    rec = new_record(id="a", image="/x.png", instruction="do")
    assert set(rec) == set(RECORD_FIELDS) and rec["references"] == []
    pa.Table.from_pylist([rec], schema=RECORD_SCHEMA)  # every record dict fits the schema
    with pytest.raises(KeyError):
        new_record(id="a", colour="red")


def test_validate_record_ok_and_roundtrip():
    rec = validate_record(
        new_record(id=7, image="s3://b/a.png", instruction="  make it red ", mask_rle=[0, 5], mask_shape=[512, 512], category=3)
    )
    assert isinstance(rec, EditRecord)
    assert rec.id == "7" and rec.instruction == "make it red" and rec.category == "3"
    assert rec.has_mask and rec.mask_rle == (0, 5) and rec.mask_shape == (512, 512)
    assert rec.target_prompt is None
    assert validate_record(rec.to_dict()) == rec


def test_target_prompt_is_an_optional_record_field():
    assert RECORD_SCHEMA.field("target_prompt").type == pa.string()
    rec = validate_record(new_record(id="a", image="x.png", instruction="do", target_prompt=" a dog sitting "))
    assert rec.target_prompt == "a dog sitting"
    assert validate_record(rec.to_dict()) == rec
    assert validate_record(new_record(id="a", image="x.png", instruction="do", target_prompt="  ")).target_prompt is None
    with pytest.raises(RecordError, match="'target_prompt' must be a string"):
        validate_record(new_record(id="a", image="x.png", instruction="do", target_prompt=3))


@pytest.mark.parametrize(
    "values,reason",
    [
        ({"id": "a", "image": "x.png", "instruction": "   "}, "record a: empty or missing 'instruction'"),
        ({"id": "a", "image": "x.png"}, "record a: empty or missing 'instruction'"),
        ({"id": "a", "instruction": "do"}, "record a: no 'image' given"),
        ({"image": "x.png", "instruction": "do"}, "missing 'id'"),
        ({"id": "a", "image": "x.png", "instruction": "do", "mask_rle": [1, 2, 3]}, "odd length 3"),
        ({"id": "a", "image": "x.png", "instruction": "do", "mask_shape": [512]}, "mask_shape must be"),
        ({"id": "a", "image": "x.png", "instruction": "do", "error": "invalid JSON on line 3"}, "invalid JSON on line 3"),
    ],
)
def test_validate_record_errors_are_readable(values, reason):
    with pytest.raises(RecordError) as err:
        validate_record(new_record(**values))
    assert reason in str(err.value)


def test_error_row_and_table():
    started = datetime(2025, 1, 1, tzinfo=timezone.utc)
    row = error_row(
        new_record(id="r1", image="x.png", instruction="do", category="c"),
        CONFIG,
        RecordError("image not found: s3://b/x.png"),
        run_id="run-1",
        device="cpu",
        started_at=started,
        finished_at=started + timedelta(seconds=2),
    )
    check_row(row)
    assert row["status"] == "error" and row["error"] == "image not found: s3://b/x.png"
    assert row["runtime_s"] == 2.0 and row["psnr_bg"] is None and row["output_uri"] is None
    assert row["clip_whole"] is None and row["clip_status"] == row["structure_status"] == "not computed: edit failed"
    assert json.loads(row["policy_params"]) == {"full_steps": 2, "omega": 0.4}
    assert row["policy_params"] == '{"full_steps":2,"omega":0.4}'  # sorted, stable
    # non-RecordError exceptions keep their type name in the reason
    assert error_row({"id": "r2"}, CONFIG, KeyError("x"), run_id="r")["error"] == "KeyError: 'x'"

    ok = base_row({"id": "r3", "instruction": "do"}, CONFIG, "run-1")
    ok.update(status="ok", keep_ratio_per_step=[1.0, 0.5], psnr_bg=float("nan"), psnr_vs_full=float("inf"),
              kept_per_step=[4096, 1024], started_at=started, finished_at=started)
    table = rows_to_table([row, ok])
    assert table.schema.equals(output_schema())
    assert table.column("record_id").to_pylist() == ["r1", "r3"]
    assert table.column("psnr_bg").to_pylist() == [None, None]  # NaN -> null
    assert math.isinf(table.column("psnr_vs_full").to_pylist()[1])
    assert table.column("keep_ratio_per_step").to_pylist() == [None, [1.0, 0.5]]
    assert table.column("kept_per_step").to_pylist() == [None, [4096, 1024]]   # exact counts, not ratios


def test_rows_parquet_roundtrip(tmp_path):
    row = error_row({"id": "r1", "instruction": "x"}, CONFIG, "bad", run_id="run")
    pq.write_table(rows_to_table([row]), tmp_path / "o.parquet")
    back = pq.read_table(tmp_path / "o.parquet")
    assert back.schema.equals(output_schema()) and back.num_rows == 1


def test_check_row_rejects_bad_rows():
    row = base_row({"id": "x"}, CONFIG, "run")
    with pytest.raises(ValueError, match="status"):
        check_row(row)  # status None
    row["status"] = "error"
    with pytest.raises(ValueError, match="reason"):
        check_row(row)
    row["error"] = "x"
    row["surprise"] = 1
    with pytest.raises(ValueError, match="extra=\\['surprise'\\]"):
        check_row(row)
    assert len(output_columns()) == len(set(output_columns()))
