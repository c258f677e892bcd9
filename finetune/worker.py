"""The loop every Ray Train worker runs (`run_steps`, the toy's phases included: `toy_run.py`) and the manifest
fine-tune's worker: encode its records once, then optimizer steps of gradient-accumulated micro-batches
(`optimizer_step`, shared with the toy), validation at fixed drop ratios, the loss log and checkpoints.
Everything a step draws is a function of (seed, step, micro-step, rank) (`schedule.py`), so a run restored from
its checkpoint at step k repeats steps k+1 … exactly as the uninterrupted run does."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .config import FinetuneConfig
from .loop import optimizer_step, run_steps, validation_loss
from .objective import FamilyObjective
from .objectives import objective_for
from .schedule import batch_indices, generator, learning_rate


@dataclass
class Run:
    """What one worker holds for the whole run."""
    cfg: FinetuneConfig
    pipe: Any
    module: torch.nn.Module                 # the transformer as trained (DDP/FSDP-wrapped)
    params: list[torch.nn.Parameter]
    optimizer: Any
    objective: FamilyObjective
    train: list[dict[str, Any]]             # this worker's encoded records
    val: list[dict[str, Any]]               # the encoded validation records (every worker)
    rank: int
    world: int
    device: torch.device
    state: dict[str, Any]                   # step, log, wall_s, resumed_at, recent: what a checkpoint carries
    resumed: bool
    log_uri: str | None = None              # rank 0's live loss log (loss.jsonl)


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every worker; `config["cfg"]` is the validated config as a dict, `config["kind"]` says which
    (`manifest`: a fine-tune on a manifest's records; `toy`: the toy's phases on its procedural data)."""
    import ray.train

    if config.get("kind") == "toy":
        from .toy_run import toy_train_loop
        toy_train_loop(config)
        return
    run = _setup(FinetuneConfig.model_validate(config["cfg"]), ray.train.get_checkpoint())
    run.log_uri = config.get("log_uri")
    run_steps(run.state, run.cfg.train.steps, lambda: _step(run), lambda lr, s: _after_step(run, lr, s),
              fail_at_step=None if run.resumed else run.cfg.fail_at_step)



def _setup(cfg: FinetuneConfig, checkpoint: Any) -> Run:
    import ray.train
    import ray.train.torch

    from .model import load_model, make_trainable, park_encoders, wrap
    from .state import load_saved, restore_optimizer, restore_weights

    torch.set_num_threads(cfg.scaling.threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    pipe = load_model(cfg, device)
    objective = objective_for(pipe, cfg.model.max_sequence_length, cfg.train.guidance)
    cache = None
    if cfg.data.cache:
        from .cache import EncodedCache
        cache = EncodedCache(cfg.data.cache, cfg)
    train = encode_shard(objective, ray.train.get_dataset_shard(f"train_{rank}"), cfg.data.size, cache)
    val = encode_shard(objective, ray.train.get_dataset_shard("val"), cfg.data.size, cache)
    park_encoders(pipe)
    params = make_trainable(pipe, cfg)
    saved = load_saved(checkpoint)
    if saved is not None:
        restore_weights(pipe.transformer, saved, cfg.lora is not None)
    module = wrap(pipe, cfg, device)
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    # recent: the losses of the steps since the last log row (a checkpoint may fall between two rows)
    state = {"step": 0, "log": [], "wall_s": 0.0, "resumed_at": [], "recent": []}
    if saved is not None:
        restore_optimizer(module, optimizer, saved, cfg.scaling.strategy == "fsdp")
        state = {k: saved.get(k, v) for k, v in state.items()}
        state["resumed_at"] = [*state["resumed_at"], state["step"]]
    return Run(cfg, pipe, module, params, optimizer, objective, train, val, rank, world, device, state,
               resumed=saved is not None)


def encode_shard(objective: FamilyObjective, shard: Any, size: int, cache: Any = None) -> list[dict[str, Any]]:
    """Every record of a dataset shard, decoded and encoded by the frozen encoders (or read from the cache of
    encoded records), in manifest order."""
    from PIL import Image

    from .data import decode

    out = []
    for item in shard.iter_rows():
        row = item["row"]
        sample = cache.get(row) if cache is not None else None
        if sample is None:
            images = [Image.fromarray(decode(b, size)) for b in [row["source"], *row["references"]]]
            target = Image.fromarray(decode(row["target"], size))
            with torch.no_grad():
                sample = objective.encode(images, target, row["instruction"])
            if cache is not None:
                cache.put(row, sample)
        out.append({"pos": row["pos"], "id": row["id"], **sample})
    return sorted(out, key=lambda s: s["pos"])   # manifest order, whatever order Ray Data delivered


def _step(run: Run) -> float:
    """One optimizer step over `grad_accum` micro-batches of this worker's encoded records; returns its
    learning rate."""
    cfg, step = run.cfg.train, run.state["step"]
    lr = learning_rate(cfg.lr, cfg.steps, cfg.warmup, step)
    micro_batches = (([run.train[i] for i in batch_indices(run.cfg.data.seed, run.rank, len(run.train),
                                                            cfg.batch_size, cfg.grad_accum, step, micro)],
                      generator(run.cfg.data.seed, run.rank, step, micro)) for micro in range(cfg.grad_accum))
    loss = optimizer_step(run.module, run.optimizer, run.params, run.objective, run.pipe.scheduler.config,
                          micro_batches, cfg.batch_size * cfg.grad_accum, lr, cfg.reference_drop,
                          cfg.mixed_precision, cfg.grad_clip, run.device)
    run.state["recent"].append(loss)
    run.state["step"] = step + 1
    return lr



def validate(run: Run, ratio: float) -> float:
    """The validation loss of this run's validation records at `ratio` (the same number on every worker)."""
    model = getattr(run.module, "module", run.module) if run.cfg.scaling.strategy == "ddp" else run.module
    return validation_loss(model, run.objective, run.val, ratio, run.device, run.cfg.train.mixed_precision)



def _after_step(run: Run, lr: float, seconds: float) -> None:
    """The log row every `report_every` steps (validation every `validation.every`), checkpoints every
    `checkpoint_every`, and the last step's of both."""
    from .state import report

    cfg, step = run.cfg, run.state["step"]
    done = step >= cfg.train.steps
    if step % cfg.report_every == 0 or done:
        recent = run.state["recent"]
        row: dict[str, Any] = {"step": step, "loss": sum(recent) / len(recent), "lr": lr,
                               "seconds_per_step": seconds, "wall_s": run.state["wall_s"]}
        run.state["recent"] = []
        if step % cfg.validation.every == 0 or done:
            row.update({f"val@{r:g}": validate(run, r) for r in cfg.validation.drop_ratios})
        run.state["log"].append(row)
        if run.rank == 0:
            _write_log(run)
            vals = " ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("val@"))
            print(f"[finetune {step}/{cfg.train.steps}] loss {row['loss']:.4f} {vals} lr {lr:.2e} "
                  f"{seconds:.2f} s/step", flush=True)
    if step % cfg.checkpoint_every == 0 or done:
        last = run.state["log"][-1] if run.state["log"] else {}
        report(run.pipe, run.module, run.optimizer, run.state, last, rank=run.rank, lora=cfg.lora is not None,
               fsdp=cfg.scaling.strategy == "fsdp", final=done)


def _write_log(run: Run) -> None:
    import json

    from pipeline.storage import write_bytes

    if run.log_uri:
        text = "".join(json.dumps(row) + "\n" for row in run.state["log"])
        write_bytes(run.log_uri, text.encode(), run.cfg.data.storage or None)
