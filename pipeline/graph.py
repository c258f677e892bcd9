"""The Ray Data graph of an ablation, per model entry:

    read records (workers) -> units (record x missing configurations) -> load (CPU: decode, write inputs)
      -> edit (GPU actor pool, one model load per actor for the whole run) -> finish (CPU: PNGs, pixel
      metrics) -> write Parquet

Nothing is materialised on the driver: records stream from the input's files, units are expanded in the
dataset, rows stream to Parquet. The GPU actor does GPU work only. There is no barrier between `full` and the
other configurations: a unit carries all of them (see `units`)."""
from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import ray

from . import storage as st
from .config import RunConfig
from .configuration import Configuration, ExpandedRun
from .finish_stage import finish_units
from .load_stage import load_units
from .record_stream import record_dataset
from .records import STATUS_OK
from .resume import completed_pairs, read_results
from .units import expand_units

log = logging.getLogger(__name__)

# What a CPU stage task may hold (its imports, torch included, and a few units' decoded images and PNGs). Also keeps the CPU stages' resource
# request distinct from the GPU actor's: Ray Data fuses a task stage into the next actor stage when the two
# requests are equal (e.g. a CPU-only pool in tests), which would put the decoding back on the actor.
CPU_STAGE_MEMORY = 2**30   # measured: ~650 MiB with torchmetrics (torch) imported
CPU_BATCH = 4   # units per CPU-stage task at least: fewer, larger tasks (a unit holds ~20 images; 4 stay in memory)

# (model entry's configurations, cfg, run_id) -> (actor class, its constructor kwargs: configurations as
# `to_row()` dicts, what crosses Ray); the real editor by default, a synthetic model in `dropedit simulate`
ActorFactory = Callable[[Sequence[Configuration], RunConfig, str], tuple[type, dict[str, Any]]]


def results_uri(cfg: RunConfig) -> str:
    return st.join_uri(cfg.output, "results")


def edit_actor(configs: Sequence[Configuration], cfg: RunConfig, run_id: str) -> tuple[type, dict[str, Any]]:
    from .edit_stage import EditActor   # pulls in torch/diffusers: only where a run starts

    first = configs[0]
    return EditActor, dict(model=first.model_name, model_path=first.model_path, output=cfg.output,
                           run_id=run_id, configs={c.config_id: c.to_row() for c in configs},
                           storage=cfg.storage.model_dump(), metrics=cfg.metrics.model_dump(),
                           cache_dir=cfg.model_cache_dir, model_options=dict(first.model_options))


def done_by_record(done: set[tuple[str, str]], config_ids: Sequence[str]) -> dict[str, frozenset[str]]:
    """record id -> the config ids (of these) that already have an ok row."""
    wanted, out = set(config_ids), defaultdict(set)
    for cid, rid in done:
        if cid in wanted:
            out[rid].add(cid)
    return {rid: frozenset(cids) for rid, cids in out.items()}


def model_dataset(cfg: RunConfig, configs: Sequence[Configuration], done: dict[str, frozenset[str]],
                  run_id: str, factory: ActorFactory) -> ray.data.Dataset:
    """The graph of one model entry, ending in its output rows."""
    storage = cfg.storage.model_dump()
    actor_cls, actor_kwargs = factory(configs, cfg, run_id)
    actors = cfg.actors
    cpu_batch = max(CPU_BATCH, actors.batch_size)   # an actor call's worth of units per CPU task, at least
    return (record_dataset(cfg.input.uri, cfg.input.format, cfg.storage, cfg.input.options)
            .map_batches(expand_units, batch_format="pyarrow", num_cpus=0.25,
                         fn_kwargs=dict(config_ids=[c.config_id for c in configs], done=done))
            .repartition(target_num_rows_per_block=cpu_batch)   # a manifest is one block: spread its loading
            .map_batches(load_units, batch_size=cpu_batch, batch_format="pyarrow", num_cpus=1,
                         memory=CPU_STAGE_MEMORY, fn_kwargs=dict(output=cfg.output, storage=storage))
            # streaming (no barrier): blocks of `batch_size` units, so each actor call gets its own units and the
            # pool spreads them; without it, a manifest's one block would go to a single actor
            .repartition(target_num_rows_per_block=actors.batch_size)
            .map_batches(actor_cls, fn_constructor_kwargs=actor_kwargs, batch_size=actors.batch_size,
                         batch_format="pyarrow", num_gpus=actors.num_gpus, num_cpus=actors.num_cpus,
                         compute=ray.data.ActorPoolStrategy(min_size=actors.min_size, max_size=actors.max_size,
                                                            initial_size=actors.min_size))
            .map_batches(finish_units, batch_size=cpu_batch, batch_format="pyarrow", num_cpus=1, memory=CPU_STAGE_MEMORY,
                         fn_kwargs=dict(output=cfg.output, storage=storage, compute=list(cfg.metrics.compute))))


def written_files(cfg: RunConfig) -> set[str]:
    fs, path = st.filesystem_for(results_uri(cfg), cfg.storage)
    try:
        return {f.path for f in fs.get_file_info(pa.fs.FileSelector(path, recursive=True)) if f.is_file}
    except FileNotFoundError:
        return set()


def run_ablation(run: ExpandedRun, factory: ActorFactory = edit_actor) -> dict[str, Any]:
    """Run every missing (record, configuration) pair; returns counts for the caller to print."""
    cfg = run.config
    run_id = cfg.run_id or uuid.uuid4().hex[:12]
    done = completed_pairs(results_uri(cfg), cfg.storage)
    fs, results_path = st.filesystem_for(results_uri(cfg), cfg.storage)
    before = written_files(cfg)
    for model in run.model_keys():   # one actor pool per model entry, for the whole run
        mine = run.of_model(model)
        ids = [c.config_id for c in mine]
        model_dataset(cfg, mine, done_by_record(done, ids), run_id, factory).write_parquet(
            results_path, filesystem=fs)
    return {"run_id": run_id, "configurations": len(run.configurations), "already_done": len(done),
            **new_row_counts(cfg, before), "results": results_uri(cfg)}


def new_row_counts(cfg: RunConfig, before: set[str]) -> dict[str, int]:
    """Rows this run wrote (files that were not there before it), by status, and their records."""
    fs, _ = st.filesystem_for(results_uri(cfg), cfg.storage)
    new = sorted(written_files(cfg) - before)
    if not new:
        return {"records": 0, "edited": 0, "ok": 0, "errors": 0}
    import pyarrow.dataset as ds

    table = ds.dataset(new, format="parquet", filesystem=fs).to_table(columns=["record_id", "status"])
    ok = int(pc.sum(pc.equal(table["status"], STATUS_OK)).as_py() or 0)
    return {"records": len(pc.unique(table["record_id"])), "edited": table.num_rows, "ok": ok,
            "errors": table.num_rows - ok}


__all__ = ["ActorFactory", "edit_actor", "read_results", "results_uri", "run_ablation"]
