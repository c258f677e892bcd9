"""Resume: the (config_id, record_id) pairs that already have an `ok` row in the results folder.

An anti-join against what is written is simple and robust; a rerun therefore edits only the missing or
failed pairs and never writes an `ok` pair twice. A failed pair that is retried keeps its old error row:
readers take the `ok` row where one exists (see `latest_rows`)."""
from __future__ import annotations

from typing import Collection

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from . import storage as st
from .records import STATUS_OK


def read_results(results_uri: str, storage: st.StorageLike = None,
                 columns: list[str] | None = None) -> pa.Table | None:
    fs, path = st.filesystem_for(results_uri, storage)
    try:
        files = [f.path for f in fs.get_file_info(pa.fs.FileSelector(path, recursive=True))
                 if f.is_file and f.path.endswith(".parquet")]
    except FileNotFoundError:
        return None
    if not files:
        return None
    return ds.dataset(files, format="parquet", filesystem=fs).to_table(columns=columns)


def completed_pairs(results_uri: str, storage: st.StorageLike = None) -> set[tuple[str, str]]:
    table = read_results(results_uri, storage, columns=["config_id", "record_id", "status"])
    if table is None:
        return set()
    ok = table.filter(pc.equal(table["status"], STATUS_OK))
    return set(zip(ok["config_id"].to_pylist(), ok["record_id"].to_pylist()))


def kept_counts(results_uri: str, config_ids: Collection[str],
                storage: st.StorageLike = None) -> dict[tuple[str, str], list[int]]:
    """(config_id, record_id) -> the exact per-step kept source-token counts of that configuration's ok row.
    Results written before rows had `kept_per_step` give none (their dependants become error rows)."""
    try:
        table = read_results(results_uri, storage, columns=["config_id", "record_id", "status", "kept_per_step"])
    except (pa.ArrowInvalid, KeyError):
        return {}
    if table is None:
        return {}
    ok = table.filter(pc.and_(pc.equal(table["status"], STATUS_OK), pc.is_in(table["config_id"],
                                                                               pa.array(list(config_ids)))))
    return {(c, r): list(k) for c, r, k in zip(ok["config_id"].to_pylist(), ok["record_id"].to_pylist(),
                                               ok["kept_per_step"].to_pylist()) if k is not None}


def latest_rows(table: pa.Table) -> pa.Table:
    """One row per (config_id, record_id): the `ok` one if any, else the most recent error."""
    df = table.to_pandas()
    df["_ok"] = df["status"] == STATUS_OK
    df = df.sort_values(["_ok", "finished_at"]).drop_duplicates(["config_id", "record_id"], keep="last")
    return pa.Table.from_pandas(df.drop(columns="_ok"), schema=table.schema, preserve_index=False)
