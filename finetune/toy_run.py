"""The toy model's training on the one worker loop (`finetune.loop.run_steps`): two phases, the VAE on
reconstruction (`toy.vae`), then the transformer on the Flux family's flow-matching objective
(`finetune.loop.optimizer_step`, as a manifest fine-tune steps), both on the procedural toy data
(`finetune.toy_source`). Checkpoints are `finetune.state`'s, with the VAE and the phase besides; rank 0 also
mirrors the log to `log_dir/loss.csv` as it goes."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .toy_config import ToyTrainConfig
from .toy_source import ToySource

LOG_FIELDS = ("phase", "step", "loss", "val", "val_drop", "lr", "seconds", "wall_s")


@dataclass
class ToyRun:
    """What one worker holds for the whole run."""
    cfg: ToyTrainConfig
    pipe: Any
    lora: bool
    source: ToySource
    device: torch.device
    val: tuple[np.ndarray, np.ndarray, list[str]]   # sources, targets, instructions of the validation set
    log_path: Path
    state: dict[str, Any]
    resumed: bool                                   # restored from this run's checkpoint
    seconds: list[float] = field(default_factory=list)   # step times since the last log row


def toy_train_loop(config: dict[str, Any]) -> None:
    """The toy's worker: `config["cfg"]` the validated `ToyTrainConfig` as a dict, `model_resolved` its model
    section with the vocabulary, `log_dir` where rank 0 keeps loss.csv."""
    import ray.train
    import ray.train.torch

    from toy.model import ToyModelConfig

    from .toy_init import start
    from .toy_source import batch_arrays

    cfg = ToyTrainConfig.model_validate(config["cfg"])
    torch.set_num_threads(cfg.threads)
    ctx = ray.train.get_context()
    model_cfg = ToyModelConfig.from_mapping(config["model_resolved"])
    pipe, lora, state, saved = start(cfg, model_cfg, ray.train.get_checkpoint())
    device = ray.train.torch.get_device()
    pipe.to(device)
    categories = tuple(cfg.data.categories) if cfg.data.categories else None
    source = ToySource(cfg.data.seed, model_cfg.image_size, ctx.get_world_rank(), ctx.get_world_size(), categories)
    val = batch_arrays(cfg.data.val_seed, 0, cfg.data.val_n, model_cfg.image_size)
    run = ToyRun(cfg, pipe, lora, source, device, val, Path(config["log_dir"]) / "loss.csv", state,
                  resumed=saved is not None)
    while state["phase"] is not None:
        (_vae_phase if state["phase"] == "vae" else _transformer_phase)(run, saved)
        saved = None   # a new phase builds its own optimizer


def _optimizer(params: Any, lr: float, phase: str, saved: dict[str, Any] | None) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if saved is not None and saved.get("optimizer_phase") == phase:
        optimizer.load_state_dict(saved["optimizer"])
    return optimizer


def _vae_phase(run: ToyRun, saved: dict[str, Any] | None) -> None:
    import ray.train.torch

    from toy.vae import VaeLoss, set_latent_normalisation, to_pixels, vae_step

    from .schedule import learning_rate

    pipe, pc, state = run.pipe, run.cfg.vae, run.state
    module = ray.train.torch.prepare_model(VaeLoss(pipe.vae))
    optimizer = _optimizer(pipe.vae.parameters(), pc.lr, "vae", saved)
    val_pixels = to_pixels(np.concatenate(run.val[:2])).to(run.device)

    def step() -> float:
        s = state["step"]
        lr = learning_rate(pc.lr, pc.steps, pc.warmup, s)
        for group in optimizer.param_groups:
            group["lr"] = lr
        gen = run.source.generator("vae", s)   # the crops, then the posterior's sample: exact on resume
        images = run.source.vae_images(s, pc.batch_size, pc.crop, gen)
        state["recent"].append(vae_step(module, optimizer, to_pixels(images).to(run.device), generator=gen)["loss"])
        state["step"] = s + 1
        return lr

    def hand_over() -> None:
        # latent statistics -> shift/scale, as the real FLUX VAE config carries them
        pipe.vae.eval()
        shift, scale = set_latent_normalisation(pipe, val_pixels)
        state.update(vae_stats={"shift_factor": shift, "scaling_factor": scale}, phase="transformer", step=0)

    _run_phase(run, "vae", pc.steps, step, lambda: {"val": _vae_psnr(pipe, val_pixels)}, hand_over,
               module, optimizer)


def _transformer_phase(run: ToyRun, saved: dict[str, Any] | None) -> None:
    import ray.train.torch

    from toy.model import T5_LENGTH

    from .objectives import objective_for
    from .schedule import learning_rate
    from .toy_source import as_samples, encode_batch, to_device
    from .loop import optimizer_step, validation_loss

    pipe, pc, state = run.pipe, run.cfg.transformer, run.state
    pipe.vae.eval()
    module = ray.train.torch.prepare_model(pipe.transformer, move_to_device=False)
    params = [p for p in pipe.transformer.parameters() if p.requires_grad]   # all, or the adapter's (LoRA)
    optimizer = _optimizer(params, pc.lr, "transformer", saved)
    objective = objective_for(pipe, T5_LENGTH, None, float(pc.edit_weight or 0.0))
    val = to_device(as_samples(pipe, encode_batch(pipe, *run.val, T5_LENGTH)), run.device)

    def step() -> float:
        s = state["step"]
        lr = learning_rate(pc.lr, pc.steps, pc.warmup, s)
        gen = run.source.generator("transformer", s)
        samples = run.source.samples(pipe, s, pc.batch_size, T5_LENGTH, run.device)
        state["recent"].append(optimizer_step(module, optimizer, params, objective, pipe.scheduler.config,
                                              [(samples, gen)], len(samples), lr, pc.reference_drop, "no", 1.0,
                                              run.device, pc.sigma_logit_mean))
        state["step"] = s + 1
        return lr

    def validate() -> dict[str, Any]:
        def at(ratio: float) -> float:
            return validation_loss(pipe.transformer, objective, val, float(ratio), run.device)

        row = {"val": at(0.0), "val_drop": None if pc.val_drop is None else at(pc.val_drop)}
        if state["step"] >= pc.steps:
            state["val_sweep"] = {f"{r:g}": at(r) for r in pc.val_drop_sweep or ()}
        return row

    _run_phase(run, "transformer", pc.steps, step, validate, lambda: state.update(phase=None), module, optimizer)


def _run_phase(run: ToyRun, phase: str, steps: int, step: Callable[[], float],
               validate: Callable[[], dict[str, Any]], hand_over: Callable[[], None], module: Any,
               optimizer: Any) -> None:
    """`phase` on the one worker loop: a log row every `report_every` steps, the hand-over to the next phase
    when done, a checkpoint every `checkpoint_every` steps and at every hand-over."""
    from .loop import run_steps

    fail_at = run.cfg.fail_at_step if phase == "transformer" and not run.resumed else None

    def after_step(lr: float, seconds: float) -> None:
        state, cfg = run.state, run.cfg
        run.seconds.append(seconds)
        done = state["step"] >= steps
        if state["step"] % cfg.report_every == 0 or done:
            _log_row(run, phase, lr, validate())
        if done:
            hand_over()
        if state["step"] % cfg.checkpoint_every == 0 or done:
            _checkpoint(run, module, optimizer, phase)

    run_steps(run.state, steps, step, after_step, fail_at_step=fail_at, phase=phase)
    if run.state["phase"] == phase:   # restored past the configured steps: nothing would ever hand over
        raise ValueError(f"{phase} phase restored at step {run.state['step']}, past its {steps} steps")


def _log_row(run: ToyRun, phase: str, lr: float, validation: dict[str, Any]) -> None:
    """Append the report's row to the log (and, on rank 0, to loss.csv and stdout)."""
    state, steps = run.state, getattr(run.cfg, phase).steps
    row = {"phase": phase, "step": state["step"], "loss": float(np.mean(state["recent"])), "val": validation["val"],
           "lr": lr, "seconds": float(np.mean(run.seconds)), "wall_s": state["wall_s"]}
    if "val_drop" in validation:
        row["val_drop"] = validation["val_drop"]
    state["log"].append(row)
    state["recent"], run.seconds = [], []
    if run.source.rank == 0:
        _write_log(run.log_path, state["log"])
        eta = (steps - state["step"]) * row["seconds"]
        at_drop = "" if row.get("val_drop") is None else f" val@drop {row['val_drop']:.4f}"
        print(f"[{phase} {state['step']}/{steps}] loss {row['loss']:.4f} val {row['val']:.4f}{at_drop} "
              f"lr {lr:.2e} {row['seconds']:.2f} s/step, phase eta {eta / 60:.1f} min", flush=True)


def _checkpoint(run: ToyRun, module: Any, optimizer: Any, phase: str) -> None:
    from .state import report

    state = run.state
    metrics = state["log"][-1] if state["log"] else {}
    report(run.pipe, module, optimizer, state, metrics, rank=run.source.rank, lora=run.lora, fsdp=False,
           final=state["phase"] is None, extra={"vae": run.pipe.vae.state_dict(), "optimizer_phase": phase})


def _vae_psnr(pipe: Any, pixels: torch.Tensor) -> float:
    """Reconstruction PSNR (dB) of the fixed validation images."""
    from metrics.pixel import psnr
    from toy.vae import to_uint8

    with torch.no_grad():
        pipe.vae.eval()
        recon = pipe.vae.decode(pipe.vae.encode(pixels).latent_dist.mode(), return_dict=False)[0]
    return float(np.mean([psnr(a, b) for a, b in zip(to_uint8(recon), to_uint8(pixels))]))


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
