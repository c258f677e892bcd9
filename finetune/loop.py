"""The steps every training run shares, whatever its data (a manifest fine-tune, the toy's phases): the loop
over optimizer steps, one optimizer step of the flow-matching loss with gradient accumulation, and the
validation loss at fixed draws."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import torch

from .objective import FamilyObjective, draw, fixed_draws


def run_steps(state: dict[str, Any], steps: int, step: Callable[[], float],
              after_step: Callable[[float, float], None], fail_at_step: int | None = None,
              phase: str | None = None) -> None:
    """The loop of every phase of every run: optimizer steps from `state["step"]` to `steps` (`step` advances
    the state and returns its learning rate), the wall time, then `after_step(lr, seconds)` (log rows,
    validation, checkpoints), until `state["phase"]` is no longer `phase` (a phase hands over to the next
    itself; a manifest fine-tune has no phases). `fail_at_step` (tests): fail there, as a crashed worker would."""
    t_last = time.perf_counter()
    while state["step"] < steps and state.get("phase") == phase:
        if fail_at_step is not None and state["step"] == fail_at_step:
            raise RuntimeError(f"fail_at_step {fail_at_step}: injected failure (tests)")
        lr = step()
        now = time.perf_counter()
        state["wall_s"] += now - t_last
        seconds, t_last = now - t_last, now
        after_step(lr, seconds)


def optimizer_step(module: torch.nn.Module, optimizer: Any, params: list[torch.nn.Parameter],
                   objective: FamilyObjective, scheduler_config: Any,
                   micro_batches: Iterable[tuple[list[dict[str, Any]], torch.Generator]], per_step: int, lr: float,
                   reference_drop: tuple[float, float] | None, mixed_precision: str, grad_clip: float,
                   device: torch.device, sigma_logit_mean: float = 0.0) -> float:
    """One optimizer step of the flow-matching loss over gradient-accumulated micro-batches (samples, the
    generator of their draws); returns the step's loss, averaged over workers. Gradients are all-reduced once,
    in the step's last transformer call (DDP's `no_sync` before it). `sigma_logit_mean`: the training σ's
    logit-normal location (SD3's m; > 0 trains nearer noise, where an edit's content is decided)."""
    from .model import autocast

    for group in optimizer.param_groups:
        group["lr"] = lr
    module.train()
    optimizer.zero_grad(set_to_none=True)
    total, batches = 0.0, list(micro_batches)
    for m, (samples, gen) in enumerate(batches):
        draws = draw(scheduler_config, samples, gen, reference_drop, sigma_logit_mean)
        n_calls = objective.call_count(samples)
        calls = objective.losses(module, samples, draws, device)
        for j in range(n_calls):
            with _sync(module, m == len(batches) - 1 and j == n_calls - 1):
                with autocast(device, mixed_precision):
                    loss, n = next(calls)
                (loss * (n / per_step)).backward()
            total += float(loss.detach()) * n / per_step
        calls.close()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return _mean_over_workers(total, device)


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
def validation_loss(model: torch.nn.Module, objective: FamilyObjective, samples: list[dict[str, Any]],
                    ratio: float, device: torch.device, mixed_precision: str = "no") -> float:
    """The flow-matching loss of `samples` at fixed draws with `ratio` of the reference tokens dropped
    (`fixed_draws`: comparable across steps, runs and models)."""
    from .model import autocast

    model.eval()
    draws = fixed_draws(samples, ratio)
    total = 0.0
    with autocast(device, mixed_precision):
        for loss, n in objective.losses(model, samples, draws, device):
            total += float(loss) * n
    return total / len(samples)
