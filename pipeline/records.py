"""Input records (one edit request) and output rows: each declared once, with its Arrow types.

An input record is declared by ``EditRecord``'s fields; ``RECORD_FIELDS`` and the Arrow
``RECORD_SCHEMA`` are derived from them.  Records travel through Ray Data as plain dicts
with every one of those keys (``None`` when unused) so every block has the same schema.
``validate_record`` turns such a dict into an ``EditRecord`` or raises a ``RecordError``
whose message becomes the ``error`` column of an error row: bad input never crashes the job.
An output row is declared once: its own columns here, each metric's in its file of ``metrics``;
``output_schema()`` joins them (reading the metrics registry) and ``output_columns()`` is derived from it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa

import metrics


class RecordError(ValueError):
    """A problem with one input record; its message is the row's error reason."""


def _column(arrow_type: pa.DataType, default: Any = None, *, required: bool = False) -> Any:
    # the field's Arrow type rides in its metadata, so the schema is read off the class
    meta = {"arrow": arrow_type}
    return field(metadata=meta) if required else field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class EditRecord:
    """An edit request: field order and Arrow types are the input record's columns."""

    id: str = _column(pa.string(), required=True)
    image: str | None = _column(pa.string())  # URI (s3:// or local), or None when image_bytes is given
    image_bytes: bytes | None = _column(pa.binary())  # embedded encoded image (GEdit-Bench parquet)
    instruction: str = _column(pa.string(), required=True)
    mask: str | None = _column(pa.string())  # URI of a PNG, white = edited region
    mask_rle: tuple[int, ...] | None = _column(pa.list_(pa.int64()))  # PIE-Bench [start, length, ...] run list
    mask_shape: tuple[int, int] | None = _column(pa.list_(pa.int32()))  # [height, width] of the run-list grid
    category: str | None = _column(pa.string())
    references: tuple[str, ...] = _column(pa.list_(pa.string()), ())  # extra reference image URIs (multi-reference)
    target: str | None = _column(pa.string())  # URI of the exact expected output (toy data); shown in reports
    target_prompt: str | None = _column(pa.string())  # caption of the wanted result (PIE-Bench): CLIP scores it
    error: str | None = _column(pa.string())  # a reader's reason the record is bad (validate_record refuses it)

    @property
    def has_mask(self) -> bool:
        return self.mask is not None or self.mask_rle is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mask_rle"] = list(self.mask_rle) if self.mask_rle is not None else None
        d["mask_shape"] = list(self.mask_shape) if self.mask_shape is not None else None
        d["references"] = list(self.references)
        return d


# Keys every input record dict carries (readers fill the ones they don't use with None).
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(EditRecord))
RECORD_SCHEMA = pa.schema([pa.field(f.name, f.metadata["arrow"]) for f in fields(EditRecord)])
# the record stream's own column (`record_stream`): how many records follow this one in its input file, which
# tells a unit expansion whether the record is in the run's tail (`units.expand_units`)
FROM_END = "from_end"


def new_record(**values: Any) -> dict[str, Any]:
    """A record dict with every key of ``RECORD_FIELDS`` (unknown keys are an error)."""
    unknown = set(values) - set(RECORD_FIELDS)
    if unknown:
        raise KeyError(f"unknown record keys: {sorted(unknown)}")
    rec: dict[str, Any] = {k: None for k in RECORD_FIELDS}
    rec.update(values)
    if rec["references"] is None:
        rec["references"] = []
    return rec


def validate_record(rec: Mapping[str, Any]) -> EditRecord:
    """Check one record dict; raise ``RecordError`` with a readable reason."""
    if not isinstance(rec, Mapping):
        raise RecordError(f"record is not a mapping: {type(rec).__name__}")
    if rec.get("error"):
        raise RecordError(str(rec["error"]))
    rid = rec.get("id")
    if rid is None or (isinstance(rid, str) and not rid.strip()):
        raise RecordError("missing 'id'")
    instruction = rec.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise RecordError(f"record {rid}: empty or missing 'instruction'")
    image, image_bytes = rec.get("image"), rec.get("image_bytes")
    if not image and not image_bytes:
        raise RecordError(f"record {rid}: no 'image' given")
    if image is not None and not isinstance(image, str):
        raise RecordError(f"record {rid}: 'image' must be a URI string, got {type(image).__name__}")
    mask, rle, shape = rec.get("mask"), rec.get("mask_rle"), rec.get("mask_shape")
    if mask is not None and not isinstance(mask, str):
        raise RecordError(f"record {rid}: 'mask' must be a URI string, got {type(mask).__name__}")
    if rle is not None:
        rle = tuple(int(v) for v in rle)
        if len(rle) % 2:
            raise RecordError(f"record {rid}: mask run list has odd length {len(rle)}")
        if any(v < 0 for v in rle):
            raise RecordError(f"record {rid}: mask run list has negative entries")
    if shape is not None:
        shape = tuple(int(v) for v in shape)
        if len(shape) != 2 or min(shape) <= 0:
            raise RecordError(f"record {rid}: mask_shape must be [height, width], got {shape}")
    refs = rec.get("references") or ()
    if isinstance(refs, str) or not all(isinstance(r, str) and r for r in refs):
        raise RecordError(f"record {rid}: 'references' must be a list of URIs")
    category = rec.get("category")
    target = rec.get("target") or None
    if target is not None and not isinstance(target, str):
        raise RecordError(f"record {rid}: 'target' must be a URI string, got {type(target).__name__}")
    target_prompt = rec.get("target_prompt")
    if target_prompt is not None and not isinstance(target_prompt, str):
        raise RecordError(f"record {rid}: 'target_prompt' must be a string, got {type(target_prompt).__name__}")
    return EditRecord(
        id=str(rid),
        instruction=instruction.strip(),
        image=image or None,
        image_bytes=bytes(image_bytes) if image_bytes else None,
        mask=mask or None,
        mask_rle=rle,
        mask_shape=shape,  # type: ignore[arg-type]
        category=None if category is None else str(category),
        references=tuple(refs),
        target=target,
        target_prompt=(target_prompt.strip() or None) if target_prompt else None,
    )


# ------------------------------------------------------------------ output rows

ROW_FIELDS = (   # the row's own columns; the metrics' (metrics.output_columns) go before `device`
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("record_id", pa.string(), nullable=False),
    pa.field("config_id", pa.string(), nullable=False),
    pa.field("model", pa.string()),
    pa.field("policy", pa.string()),
    pa.field("policy_params", pa.string()),  # JSON, sorted keys: what the configuration set
    pa.field("policy_applied", pa.string()),  # JSON: every parameter the edit applied, defaults resolved
    pa.field("label", pa.string()),  # the configuration's name for tables and plots, e.g. "tokendrop omega=0.4"
    pa.field("height", pa.int32()),
    pa.field("width", pa.int32()),
    pa.field("seed", pa.int64()),
    pa.field("steps", pa.int32()),
    pa.field("guidance_scale", pa.float64()),
    pa.field("resize_filter", pa.string()),   # PIL filter of the source resize to the edit size
    pa.field("category", pa.string()),
    pa.field("instruction", pa.string()),
    pa.field("output_uri", pa.string()),
    pa.field("status", pa.string(), nullable=False),  # 'ok' | 'error'
    pa.field("error", pa.string()),
    pa.field("runtime_s", pa.float64()),
    pa.field("keep_ratio_mean", pa.float64()),
    pa.field("keep_ratio_per_step", pa.list_(pa.float32())),
    pa.field("query_ratio_mean", pa.float64()),  # noisy tokens whose queries were computed (SpotEdit < 1)
    pa.field("tokens_processed", pa.int64()),
    pa.field("keys_per_step", pa.list_(pa.int32())),    # image tokens every attention layer saw as keys
    pa.field("from_layer_per_step", pa.list_(pa.int32())),  # ToPi: layers before it saw every token
    pa.field("active_per_step", pa.list_(pa.int32())),      # SpotEdit: noisy tokens with queries
    pa.field("kept_per_step", pa.list_(pa.int32())),        # source (reference) tokens kept, exact counts
    pa.field("loop_s", pa.float64()),       # denoising loop only (no encode/decode)
    pa.field("policy_s", pa.float64()),     # of which the policy's plan + observe
    pa.field("selector_s", pa.float64()),   # of which scoring inside the transformer (ToPi statistics)
    pa.field("speedup_vs_full", pa.float64()),  # full's loop_s / this loop_s, both timed on the same actor
    # seconds of a `full` edit this row's unit re-ran only as its pairing partner and reference (a split unit,
    # or a resumed one whose `full` is written): on one row per re-run, so the column's sum is the GPU time
    # pairing cost; null elsewhere
    pa.field("pairing_rerun_s", pa.float64()),
    # seconds this row's unit spent reading its record's `full` picture back, waiting for it to be written
    # included (`units.pairing: read_back`), on the same one row: GPU time pairing cost too; null elsewhere
    pa.field("pairing_wait_s", pa.float64()),
    pa.field("speedup_paired_on", pa.string()),   # "unit": the record's own `full`; "actor": read back, timed
                                                  # against this actor's latest `full` of the configuration
    pa.field("flops_ideal_speedup", pa.float64()),       # the edit's plan priced on its own model (costs.flops)
    pa.field("flops_ideal_speedup_real", pa.float64()),  # the plan's shares on its family's real model, 1024²
    pa.field("roofline_speedup_real", pa.float64()),     # the same, on costs.roofline's H100 SXM (bytes too)
    pa.field("run_position", pa.int32()),       # this edit's place in its unit's run order (0 = first)
    pa.field("actor", pa.string()),             # host:pid of the actor that ran it
    pa.field("cache", pa.string()),             # temporal cache (actors.caches) label, e.g. "magcache threshold=0.25"
    pa.field("cache_params", pa.string()),      # JSON: the cache as applied ({"name", **params}); null = none
    pa.field("cache_calls", pa.int32()),        # transformer calls the cache saw (all CFG branches)
    pa.field("cache_skipped_calls", pa.int32()),    # of which it served, in part or whole
    pa.field("cache_skipped_blocks", pa.int32()),   # transformer blocks not run because of it
    pa.field("cache_blocks_total", pa.int32()),     # blocks the calls had (cache_calls x layers)
    pa.field("cache_skipped_calls_cond", pa.int32()),
    pa.field("cache_skipped_calls_uncond", pa.int32()),
    pa.field("cache_skipped_blocks_cond", pa.int32()),
    pa.field("cache_skipped_blocks_uncond", pa.int32()),
)
ROW_TAIL = (   # when and where it ran
    pa.field("device", pa.string()),
    pa.field("attention_backend", pa.string()),   # diffusers' dispatcher backend (and SDPA kernels on CUDA)
    pa.field("text_encoders", pa.string()),       # 'resident' | 'offload' (host memory between prompts)
    pa.field("encoder_move_s", pa.float64()),     # of runtime_s: offloaded text encoders moved to the card
    pa.field("kv_store", pa.string()),            # SpotEdit's K/V buffers: 'compute' dtype | 'int8'
    pa.field("shape_bucket", pa.string()),        # kept/active counts rounded up to multiples of it; 'off' 
    pa.field("started_at", pa.timestamp("us", tz="UTC")),
    pa.field("finished_at", pa.timestamp("us", tz="UTC")),
)


def output_schema() -> pa.Schema:
    """The output row's Arrow schema: the row's columns with every registered metric's (read now, so a metric
    registered by a module imported later has its columns)."""
    measured = [pa.field(c.name, c.arrow) for c in metrics.output_columns()]
    return pa.schema([*ROW_FIELDS, *measured, *ROW_TAIL])


def output_columns() -> tuple[str, ...]:
    return tuple(output_schema().names)


STATUS_OK = "ok"
STATUS_ERROR = "error"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def policy_params_json(params: Mapping[str, Any] | None) -> str:
    """Canonical JSON for the ``policy_params`` column (sorted keys, stable)."""
    return json.dumps(dict(params or {}), sort_keys=True, separators=(",", ":"), default=str)


def base_row(record: Mapping[str, Any] | EditRecord, config: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """Identifying columns of a row; every other column is ``None``."""
    keys = ("id", "category", "instruction")
    rec = record if isinstance(record, Mapping) else {k: getattr(record, k) for k in keys}
    row: dict[str, Any] = {name: None for name in output_columns()}
    row.update(
        run_id=run_id,
        record_id=str(rec.get("id")),
        config_id=config.get("config_id"),
        model=config.get("model"),
        policy=config.get("policy"),
        policy_params=policy_params_json(config.get("policy_params")),
        label=config.get("label"),
        height=config.get("height"),
        width=config.get("width"),
        seed=config.get("seed"),
        steps=config.get("steps"),
        guidance_scale=config.get("guidance_scale"),
        resize_filter=config.get("resize_filter"),
        cache=config.get("cache_label"),
        category=rec.get("category"),
        instruction=rec.get("instruction"),
    )
    return row


def error_row(
    record: Mapping[str, Any] | EditRecord,
    config: Mapping[str, Any],
    reason: str | BaseException,
    *,
    run_id: str,
    device: str | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> dict[str, Any]:
    """An output row with ``status='error'`` and a readable ``error`` reason."""
    if isinstance(reason, BaseException):
        reason = f"{type(reason).__name__}: {reason}" if not isinstance(reason, RecordError) else str(reason)
    row = base_row(record, config, run_id)
    finished_at = finished_at or utcnow()
    row.update(
        status=STATUS_ERROR,
        error=str(reason) or "unknown error",
        device=device,
        started_at=started_at or finished_at,
        finished_at=finished_at,
        runtime_s=(finished_at - started_at).total_seconds() if started_at else 0.0,
    )
    row.update(metrics.failed_edit_columns())
    return row


def check_row(row: Mapping[str, Any], names: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` if a row lacks/extends the output columns (``names``, default: ``output_columns()``)
    or has a bad status."""
    names = output_columns() if names is None else names
    missing = [c for c in names if c not in row]
    extra = [c for c in row if c not in names]
    if missing or extra:
        raise ValueError(f"output row columns differ: missing={missing} extra={extra}")
    if row["status"] not in (STATUS_OK, STATUS_ERROR):
        raise ValueError(f"status must be 'ok' or 'error', got {row['status']!r}")
    if row["status"] == STATUS_ERROR and not row.get("error"):
        raise ValueError("error rows need an 'error' reason")


def rows_to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows -> Arrow table with exactly ``output_schema()`` (NaN metrics become null)."""
    rows, schema = list(rows), output_schema()
    for row in rows:
        check_row(row, schema.names)
    columns = {name: [_clean(row[name]) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


def _clean(value: Any) -> Any:
    # NaN is "no value" here; +inf stays (PSNR of identical images is +inf).
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_clean(v) for v in value]
    return value
