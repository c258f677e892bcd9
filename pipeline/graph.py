"""The Ray Data graph: records x configurations -> actor pool (one per model) -> Parquet.

For each model, the `full` configurations run first, so that the other configurations of the same record
find the reference output that their fidelity metrics compare to; configurations whose budget comes from
another configuration (`budget_from`, e.g. TokenDrop's matched random arm) run last."""
from __future__ import annotations

import logging
import uuid
from typing import Any

import ray

from . import storage as st
from .config import FULL_POLICY, RunConfig, expand_grid
from .records import RECORD_FIELDS
from .resume import completed_pairs
from .sources import read_records

log = logging.getLogger(__name__)


def results_uri(cfg: RunConfig) -> str:
    return st.join_uri(cfg.output, "results")


def work_items(records: list[dict[str, Any]], configs: list[dict[str, Any]],
               done: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """One item per (record, configuration) pair without an `ok` row yet: the record's columns and the
    configuration's id (the configurations themselves go to the actors once, not with every item)."""
    return [{**{k: rec.get(k) for k in RECORD_FIELDS}, "config_id": conf["config_id"]}
            for conf in configs for rec in records if (conf["config_id"], str(rec.get("id"))) not in done]


def _stages(configs: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(model, configurations) in run order: per model, `full` first, then the rest, then the configurations
    whose budget comes from another configuration's rows (`budget_source`)."""
    out = []
    # one pool per model entry (`model` is the entry's label: a fine-tuned copy or a LoRA has its own)
    for model in dict.fromkeys(c["model"] for c in configs):
        mine = [c for c in configs if c["model"] == model]
        full = [c for c in mine if c["policy"] == FULL_POLICY]
        dependent = [c for c in mine if c.get("budget_source")]
        rest = [c for c in mine if c not in full and c not in dependent]
        out += [(mine[0]["model_name"], stage) for stage in (full, rest, dependent) if stage]
    return out


def run_ablation(cfg: RunConfig) -> dict[str, Any]:
    """Run every missing (record, configuration) pair; returns counts for the caller to print."""
    from .edit_stage import EditActor   # pulls in torch/diffusers: only where a run starts

    run_id = cfg.run_id or uuid.uuid4().hex[:12]
    records = read_records(cfg.input.uri, cfg.input.format, cfg.storage, **dict(cfg.input.options))
    configs = expand_grid(cfg)
    done = completed_pairs(results_uri(cfg), cfg.storage)
    fs, results_path = st.filesystem_for(results_uri(cfg), cfg.storage)
    storage, metrics = cfg.storage.model_dump(), cfg.metrics.model_dump()
    submitted = 0
    for model, stage in _stages(configs):
        items = work_items(records, stage, done)
        if not items:
            continue
        model_path, model_options = stage[0]["model_path"], stage[0].get("model_options") or {}
        actors = cfg.actors
        ds = ray.data.from_items(items).map_batches(
            EditActor,
            fn_constructor_kwargs=dict(model=model, model_path=model_path, output=cfg.output, run_id=run_id,
                                       configs={c["config_id"]: c for c in stage}, storage=storage,
                                       metrics=metrics, cache_dir=cfg.model_cache_dir,
                                       model_options=model_options),
            batch_size=actors.batch_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=actors.min_size, max_size=actors.max_size,
                                               initial_size=actors.min_size),
            num_gpus=actors.num_gpus, num_cpus=actors.num_cpus)
        ds.write_parquet(results_path, filesystem=fs)
        submitted += len(items)
    return {"run_id": run_id, "records": len(records), "configurations": len(configs),
            "pairs": len(records) * len(configs), "already_done": len(done), "edited": submitted,
            "results": results_uri(cfg)}
