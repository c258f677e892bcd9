"""The loop every Ray Train worker runs: encode its records once, then optimizer steps of gradient-accumulated
micro-batches, validation at fixed drop ratios, the loss log and checkpoints. Everything a step draws is a
function of (seed, step, micro-step, rank) (`schedule.py`), so a run restored from its checkpoint at step k
repeats steps k+1 … exactly as the uninterrupted run does."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from .config import FinetuneConfig
from .objective import FamilyObjective, draw, fixed_draws, objective_for
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
    """Runs on every worker; `config["cfg"]` is the validated config as a dict."""
    import ray.train

    run = _setup(FinetuneConfig.model_validate(config["cfg"]), ray.train.get_checkpoint())
    run.log_uri = config.get("log_uri")
    t_last = time.perf_counter()
    while run.state["step"] < run.cfg.train.steps:
        if run.cfg.fail_at_step is not None and not run.resumed and run.state["step"] == run.cfg.fail_at_step:
            raise RuntimeError(f"fail_at_step {run.cfg.fail_at_step}: injected failure (tests)")
        lr = _step(run)
        now = time.perf_counter()
        run.state["wall_s"] += now - t_last
        seconds, t_last = now - t_last, now
        _after_step(run, lr, seconds)


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
    """One optimizer step over `grad_accum` micro-batches; returns its learning rate. Gradients are
    all-reduced once, in the step's last transformer call (DDP's `no_sync` before it)."""
    from .model import autocast

    cfg, step = run.cfg.train, run.state["step"]
    lr = learning_rate(cfg.lr, cfg.steps, cfg.warmup, step)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.module.train()
    run.optimizer.zero_grad(set_to_none=True)
    total, per_step = 0.0, cfg.batch_size * cfg.grad_accum
    for micro in range(cfg.grad_accum):
        idx = batch_indices(run.cfg.data.seed, run.rank, len(run.train), cfg.batch_size, cfg.grad_accum, step, micro)
        samples = [run.train[i] for i in idx]
        draws = draw(run.pipe.scheduler.config, samples, generator(run.cfg.data.seed, run.rank, step, micro),
                     cfg.reference_drop)
        n_calls = run.objective.call_count(samples)
        calls = run.objective.losses(run.module, samples, draws, run.device)
        for j in range(n_calls):
            with _sync(run.module, micro == cfg.grad_accum - 1 and j == n_calls - 1):
                with autocast(run.device, cfg.mixed_precision):
                    loss, n = next(calls)
                (loss * (n / per_step)).backward()
            total += float(loss.detach()) * n / per_step
        calls.close()
    torch.nn.utils.clip_grad_norm_(run.params, cfg.grad_clip)
    run.optimizer.step()
    run.state["recent"].append(_mean_over_workers(total, run.device))
    run.state["step"] = step + 1
    return lr


def _sync(module: torch.nn.Module, sync: bool):
    import contextlib

    return contextlib.nullcontext() if sync or not hasattr(module, "no_sync") else module.no_sync()


def _mean_over_workers(value: float, device: torch.device) -> float:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


@torch.no_grad()
def validate(run: Run, ratio: float) -> float:
    """The flow-matching loss of the validation records at fixed draws with `ratio` of the reference tokens
    dropped (the same number on every worker)."""
    from .model import autocast

    model = getattr(run.module, "module", run.module) if run.cfg.scaling.strategy == "ddp" else run.module
    model.eval()
    draws = fixed_draws(run.val, ratio)
    total = 0.0
    with autocast(run.device, run.cfg.train.mixed_precision):
        for loss, n in run.objective.losses(model, run.val, draws, run.device):
            total += float(loss) * n
    return total / len(run.val)


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
        report(run, last, final=done)


def _write_log(run: Run) -> None:
    import json

    from pipeline.storage import write_bytes

    if run.log_uri:
        text = "".join(json.dumps(row) + "\n" for row in run.state["log"])
        write_bytes(run.log_uri, text.encode(), run.cfg.data.storage or None)
