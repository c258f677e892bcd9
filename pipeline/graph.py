"""The Ray Data graph of an ablation, per pool (a model entry's configurations on one card type: `pools`):

    read records (workers) -> units (record x missing configurations) -> load (CPU: decode, write inputs)
      -> edit (GPU actor pool, one model load per actor for the whole run) -> finish (CPU: PNGs, pixel
      metrics) -> write Parquet (the same CPU task: `result_files`)

Nothing is materialised on the driver: records stream from the input's files, units are expanded in the
dataset, rows stream to Parquet. The GPU actor does GPU work only. There is no barrier between `full` and the
other configurations: a unit carries its group's `full` (run, read back or re-run, see `units`); how finely records
are cut into units is planned per pool before the graph starts (`unit_plan`). Pools that share the cluster run
in one execution, the union of their graphs, each with its own share of the GPUs."""
from __future__ import annotations

import logging
import uuid
from typing import Any, Callable, Sequence

import ray

from . import storage as st
from .accounting import count_written, run_prefix
from .block_stats import drop_block_stats
from .config import ActorConfig, RunConfig
from .configuration import Configuration, ExpandedRun
from .finish_stage import finish_units
from .load_stage import load_units
from .pools import QUEUE_PER_GPU, Pool, plan_pools
from .record_stream import count_records, input_files, record_dataset
from .result_files import drain, write_rows
from .resume import DoneIndex, done_index, read_results
from .unit_backlog import cap_unit_backlog
from .unit_plan import UnitPlan, needs_records, plan_units
from .units import expand_units, unit_layout

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
    from .edit_stage import EditActor   # light: the model side is imported on the actor

    if cfg.actors.concurrency != 1:   # one model on one card: its edits are not thread-safe
        raise ValueError("actors.concurrency: the editing actor runs one unit at a time (1)")
    first = configs[0]
    return EditActor, dict(model=first.model_name, model_path=first.model_path, output=cfg.output,
                           run_id=run_id, configs={c.config_id: c.to_row() for c in configs},
                           storage=cfg.storage.model_dump(), metrics=cfg.metrics.model_dump(),
                           cache_dir=cfg.model_cache_dir, model_options=dict(first.model_options),
                           pairing=cfg.units.pairing)


def unit_plans(run: ExpandedRun, pools: Sequence[Pool]) -> dict[str, UnitPlan]:
    """Each pool's units (`unit_plan`, from the GPUs the pool holds); the input's records are counted on the
    workers, once, when the automatic rule needs them."""
    cfg = run.config
    sizes = {p.name: p.actors.max_size * p.actors.concurrency for p in pools}   # units at once: one per GPU
    if any(needs_records(cfg.units, n) for n in sizes.values()):
        records, files = count_records(cfg.input.uri, cfg.input.format, cfg.storage, cfg.input.options)
    else:
        records, files = None, len(input_files(cfg.input.uri, cfg.input.format, cfg.storage)[1])
    return {p.name: plan_units(p.configs, cfg.units, sizes[p.name], records, files) for p in pools}


def model_dataset(cfg: RunConfig, pool: Pool, done: DoneIndex, run_id: str, factory: ActorFactory,
                  plan: UnitPlan = UnitPlan(), prefix: str | None = None) -> ray.data.Dataset:
    """The graph of one pool (a model entry's configurations on one card type), ending in its output rows, or,
    given the run's file `prefix`, in the counts of the rows it wrote (`result_files`)."""
    storage = cfg.storage.model_dump()
    configs, actors = pool.configs, pool.actors
    actor_cls, actor_kwargs = factory(configs, cfg, run_id)
    resources = dict(resources=pool.resources) if pool.resources else {}
    cpu_batch = max(CPU_BATCH, actors.batch_size)   # an actor call's worth of units per CPU task, at least
    split = dict(layout=unit_layout(configs), parts=plan.parts, tail=plan.tail) if plan.parts > 1 else {}
    rows = (record_dataset(cfg.input.uri, cfg.input.format, cfg.storage, cfg.input.options)
            .map_batches(expand_units, batch_format="pyarrow", num_cpus=0.25,
                         fn_kwargs=dict(config_ids=[c.config_id for c in configs], done=done, **split))
            .repartition(target_num_rows_per_block=cpu_batch)   # a manifest is one block: spread its loading
            .map_batches(load_units, batch_size=cpu_batch, batch_format="pyarrow", num_cpus=1,
                         memory=CPU_STAGE_MEMORY, fn_kwargs=dict(output=cfg.output, storage=storage))
            # streaming (no barrier): blocks of `batch_size` units, so each actor call gets its own units and the
            # pool spreads them; without it, a manifest's one block would go to a single actor
            .repartition(target_num_rows_per_block=actors.batch_size)
            .map_batches(actor_cls, fn_constructor_kwargs=actor_kwargs, batch_size=actors.batch_size,
                         batch_format="pyarrow", num_gpus=actors.num_gpus, num_cpus=actors.num_cpus,
                         compute=pool_strategy(actors), **resources)
            .map_batches(finish_units, batch_size=cpu_batch, batch_format="pyarrow", num_cpus=1, memory=CPU_STAGE_MEMORY,
                         fn_kwargs=dict(output=cfg.output, storage=storage, compute=list(cfg.metrics.compute))))
    if prefix is None:
        return rows
    # fused with `finish` (the same request): the task that made the rows writes them
    return rows.map_batches(write_rows, batch_size=None, batch_format="pyarrow", num_cpus=1, memory=CPU_STAGE_MEMORY,
                            fn_kwargs=dict(results=results_uri(cfg), prefix=prefix, storage=storage))


def pool_strategy(actors: ActorConfig) -> ray.data.ActorPoolStrategy:
    """The GPU stage's pool: one unit in flight per GPU, not Ray Data's two. A unit is minutes of editing, so
    handing an actor its next unit when one ends costs nothing, while a unit queued behind a busy actor can
    wait there as others idle at the end of a run (the event model: 1.124x -> 1.117x ideal after the load at
    256 GPUs; it never predicted worse, 64-512 GPUs). `concurrency` K > 1: K units run at once on the actor's
    threads, each on one of its K GPUs."""
    k = actors.concurrency
    return ray.data.ActorPoolStrategy(min_size=actors.min_size, max_size=actors.max_size,
                                      initial_size=actors.min_size, max_tasks_in_flight_per_actor=QUEUE_PER_GPU * k,
                                      max_concurrent_calls_per_actor=k if k > 1 else None,
                                      enable_true_multi_threading=k > 1)


def done_pairs(cfg: RunConfig) -> DoneIndex:
    """The ok pairs already written under the run's output (resume), indexed in Ray's object store."""
    return done_index(results_uri(cfg), cfg.storage)


def written_counts(cfg: RunConfig, prefix: str) -> dict[str, int | float]:
    """The rows of the files named with `prefix` (one run's), counted on a worker (`accounting.count_written`)."""
    return ray.get(ray.remote(num_cpus=1)(count_written).remote(results_uri(cfg), cfg.storage, prefix))


def run_ablation(run: ExpandedRun, factory: ActorFactory = edit_actor) -> dict[str, Any]:
    """Run every missing (record, configuration) pair; returns counts for the caller to print."""
    cfg = run.config
    run_id = cfg.run_id or uuid.uuid4().hex[:12]
    drop_block_stats()   # Ray Data's per-block stats would grow with the units in the driver
    cap_unit_backlog()   # units waiting for the pool are counted, not weighed: they would sit in the driver
    done = done_pairs(cfg)   # indexed on a worker: the driver holds a reference and a count
    prefix = run_prefix()   # this run's files, found and counted on a worker afterwards
    waves = plan_pools(run)
    plans = unit_plans(run, [p for wave in waves for p in wave])
    for wave in waves:   # the pools of a wave share the cluster at once (pipeline.pools), in one execution
        parts = [model_dataset(cfg, p, done, run_id, factory, plans[p.name], prefix) for p in wave]
        drain(parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0])
    return {"run_id": run_id, "configurations": len(run.configurations), "already_done": done.count,
            **written_counts(cfg, prefix), "results": results_uri(cfg),
            "unit_plans": {m: p.as_dict() for m, p in plans.items()},
            "pools": [[p.as_dict() for p in wave] for wave in waves]}


__all__ = ["ActorFactory", "edit_actor", "read_results", "results_uri", "run_ablation"]
