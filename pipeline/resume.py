"""Resume: the (config_id, record_id) pairs that already have an `ok` row in the results folder.

An anti-join against what is written is simple and robust; a rerun therefore edits only the missing or
failed pairs and never writes an `ok` pair twice. A failed pair that is retried keeps its old error row:
readers take the `ok` row where one exists (see `latest_rows`).

A run's driver never holds the pairs (20 million of them for a million records x 20 configurations): a Ray
task reads them into a `DoneIndex` in the object store, and the unit expansion looks its records up there
(`DoneIndex.lookup`, on the workers); the driver keeps a reference and a count."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from . import storage as st
from .records import STATUS_OK


def read_results_files(results_uri: str, storage: st.StorageLike = None) -> list[str]:
    """The Parquet files of a results folder (none when it does not exist)."""
    fs, path = st.filesystem_for(results_uri, storage)
    try:
        return [f.path for f in fs.get_file_info(pa.fs.FileSelector(path, recursive=True))
                if f.is_file and f.path.endswith(".parquet")]
    except FileNotFoundError:
        return []


def read_results(results_uri: str, storage: st.StorageLike = None,
                 columns: list[str] | None = None) -> pa.Table | None:
    files = read_results_files(results_uri, storage)
    if not files:
        return None
    fs, _ = st.filesystem_for(results_uri, storage)
    return ds.dataset(files, format="parquet", filesystem=fs).to_table(columns=columns)


def completed_pairs(results_uri: str, storage: st.StorageLike = None) -> set[tuple[str, str]]:
    table = read_results(results_uri, storage, columns=["config_id", "record_id", "status"])
    if table is None:
        return set()
    ok = table.filter(pc.equal(table["status"], STATUS_OK))
    return set(zip(ok["config_id"].to_pylist(), ok["record_id"].to_pylist()))


@dataclass(frozen=True)
class DoneIndex:
    """The ok pairs already written, one row per record (`record_id`, `config_ids`), in Ray's object store."""

    ref: Any = None   # ObjectRef of the table; None: nothing written yet
    count: int = 0    # ok pairs

    def lookup(self, record_ids: Sequence[str]) -> dict[str, frozenset[str]]:
        """record id -> the config ids with an ok row, for these records (on a worker)."""
        if self.ref is None or not record_ids:
            return {}
        table = _fetched(self.ref)
        where = pc.index_in(pa.array(list(record_ids), pa.string()), value_set=table["record_id"]).to_pylist()
        done = table["config_ids"]
        return {rid: frozenset(done[i].as_py()) for rid, i in zip(record_ids, where) if i is not None}


_FETCHED: dict[str, pa.Table] = {}   # this worker's copy of the run's index (zero-copy from the object store)


def _fetched(ref: Any) -> pa.Table:
    key = ref.hex()
    if key not in _FETCHED:
        import ray

        _FETCHED.clear()
        _FETCHED[key] = ray.get(ref)
    return _FETCHED[key]


def _index_table(results_uri: str, storage: st.StorageLike) -> tuple[int, pa.Table]:
    """(ok pairs, their table by record): a Ray task's work, next to the data, not the driver's."""
    table = read_results(results_uri, storage, columns=["config_id", "record_id", "status"])
    if table is None:
        return 0, pa.table({"record_id": pa.array([], pa.string()), "config_ids": pa.array([], pa.list_(pa.string()))})
    ok = table.filter(pc.equal(table["status"], STATUS_OK)).select(["record_id", "config_id"])
    by_record = ok.group_by("record_id").aggregate([("config_id", "distinct")])
    pairs = int(pc.sum(pc.list_value_length(by_record["config_id_distinct"])).as_py() or 0)
    return pairs, by_record.rename_columns(["record_id", "config_ids"])


def done_index(results_uri: str, storage: st.StorageLike = None) -> DoneIndex:
    """The ok pairs under `results_uri`, indexed by a Ray task (needs Ray running); nothing there: empty."""
    import ray

    if not read_results_files(results_uri, storage):
        return DoneIndex()
    count, table = ray.remote(num_cpus=1, num_returns=2)(_index_table).remote(results_uri, storage)
    return DoneIndex(table, int(ray.get(count)))


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
