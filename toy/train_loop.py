"""The toy model's training on Ray Train: its config, the loop every worker runs, checkpoints, and the driver
that fits a `TorchTrainer` and writes the trained model (`jobs/train.py` parses the command line and calls
`fit`).

Two phases in one run: the VAE on reconstruction (`toy.vae`), then the transformer on conditional flow
matching (`actors.training`). Every worker makes its own records for every step from `toy.data` (record
indices are a function of phase, step and rank), and every step's noise comes from a generator seeded by the
same numbers, so a resumed run continues exactly where its last checkpoint left it. Checkpoints hold the
model, the optimizer and the loss log; rank 0 also mirrors the log to `log_dir/loss.csv` as it goes.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from core.assignments import apply_assignments

if TYPE_CHECKING:   # torch, diffusers and Ray load in the workers and the driver's `fit`, not on import
    from toy.model import ToyModelConfig

DEFAULTS: dict[str, Any] = {
    "name": "toy-flux-kontext",
    "storage_path": "~/.cache/dropedit/train",
    "output": "models/toy-flux-kontext",
    "threads": 1,
    "scaling": {"num_workers": 1, "use_gpu": "auto"},
    "model": {},
    "data": {"seed": 0, "val_seed": 999, "val_n": 16,
             "categories": None},   # the training records' categories, cycled; None: toy.data's cycle
    "vae": {"steps": 2500, "batch_size": 8, "lr": 2e-3, "warmup": 50, "crop": 64},
    "transformer": {"steps": 4000, "batch_size": 16, "lr": 5e-4, "warmup": 100},
    "checkpoint_every": 100,
    "report_every": 25,
    "init_from": None,     # a run's checkpoint folder (its trained VAE) or a saved pipeline folder (fine-tuning)
    "lora_rank": None,     # None: full fine-tuning; R: a rank-R LoRA adapter, base weights frozen
    "lora_alpha": None,    # None: = rank (scale 1)
    "lora_targets": None,  # None: actors.lora.DEFAULT_TARGETS (the attention projections)
}
# transformer keys of the fine-tuning options; absent from a config = off / default
DEFAULTS["transformer"].update({
    "reference_drop": None,         # [lo, hi]: per sample a drop ratio ~ U[lo, hi] of the reference tokens
    "edit_weight": None,            # w: the tokens an edit changes weigh 1 + w in the loss (actors.training)
    "val_drop": 0.5,                # validation is also logged at this fixed drop ratio (None: not)
    "val_drop_sweep": [0.0, 0.25, 0.5, 0.75, 0.9],   # ratios evaluated once at the end (loss.json)
})
PHASES = ("vae", "transformer")
LOG_FIELDS = ("phase", "step", "loss", "val", "val_drop", "lr", "seconds", "wall_s")


def load_config(path: str | None, overrides: list[str] = ()) -> dict[str, Any]:
    """Defaults, then the YAML file, then `key.sub=value` overrides (`core.assignments`' rules)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        with open(path) as f:
            _merge(cfg, yaml.safe_load(f) or {}, "")
    return apply_assignments(cfg, overrides)


def _merge(base: dict[str, Any], new: dict[str, Any], where: str) -> None:
    for key, value in new.items():
        if key not in base:
            raise ValueError(f"unknown config key {where}{key!r}; accepted: {', '.join(base)}")
        if isinstance(base[key], dict) and key != "model":
            if not isinstance(value, dict):
                raise ValueError(f"config key {where}{key} must be a mapping")
            _merge(base[key], value, f"{where}{key}.")
        else:
            base[key] = value


# ------------------------------------------------------------------ the per-worker loop

def _lr(phase_cfg: dict[str, Any], step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak (a function of the step: resumable as is)."""
    peak, total, warm = float(phase_cfg["lr"]), int(phase_cfg["steps"]), int(phase_cfg.get("warmup", 0))
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def batch_arrays(seed: int, start: int, n: int, size: int, categories: list[str] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Records start..start+n of `seed`; with `categories`, record i is of categories[i % len] (a data mix)."""
    from toy.data import make_record

    recs = [make_record(seed, i, size, categories[i % len(categories)] if categories else None)
            for i in range(start, start + n)]
    return (np.stack([r.source for r in recs]), np.stack([r.target for r in recs]),
            [r.instruction for r in recs])


@dataclass
class _Worker:
    """What one Ray Train worker holds for the whole run."""
    config: dict[str, Any]
    pipe: Any
    lora: bool
    rank: int
    world: int
    device: Any
    size: int
    val_records: tuple[Any, Any, list[str]]   # sources, targets, instructions of the fixed validation set
    log_path: Path


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import torch
    import ray.train
    import ray.train.torch

    from toy.model import ToyModelConfig

    torch.set_num_threads(int(config["threads"]))
    ctx = ray.train.get_context()
    model_cfg = ToyModelConfig.from_mapping(config["model_resolved"])
    pipe, lora, state, saved = _start(config, model_cfg, ray.train.get_checkpoint())
    device = ray.train.torch.get_device()
    pipe.to(device)
    val = config["data"]
    worker = _Worker(config, pipe, lora, ctx.get_world_rank(), ctx.get_world_size(), device, model_cfg.image_size,
                     batch_arrays(int(val["val_seed"]), 0, int(val["val_n"]), model_cfg.image_size),
                     Path(config["log_dir"]) / "loss.csv")
    while state["phase"] is not None:
        _train_phase(worker, state, saved)
        saved = None   # a new phase builds its own optimizer


def _start(config: dict[str, Any], model_cfg: ToyModelConfig, checkpoint: Any) -> tuple[Any, bool, dict[str, Any], Any]:
    """(pipeline, LoRA or not, run state, saved checkpoint or None): from the run's last checkpoint when Ray
    Train restores one, else from `init_from` (a saved pipeline or another run's VAE), else from scratch."""
    import torch

    from toy.model import build_toy_flux_kontext

    init = config.get("init_from")
    pipe = load_init_pipeline(init, model_cfg) if is_pipeline_folder(init) else build_toy_flux_kontext(model_cfg)
    lora = add_lora_from_config(pipe, config)
    state: dict[str, Any] = {"phase": PHASES[0], "step": 0, "log": [], "wall_s": 0.0, "vae_stats": None,
                             "val_sweep": None}
    saved = None
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            saved = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=False)
        restore_weights(pipe, saved, lora)
        state = {k: saved.get(k, v) for k, v in state.items()}
        if state["phase"] is None and state["step"] < int(config["transformer"]["steps"]):
            state["phase"] = "transformer"   # a finished run given more steps trains on
    elif is_pipeline_folder(init):
        state = {**state, **start_from_pipeline(pipe)}
    elif init:
        state = {**state, **start_from_vae(pipe, init)}
    return pipe, lora, state, saved


def _train_phase(w: _Worker, state: dict[str, Any], saved: dict[str, Any] | None) -> None:
    """Train `state["phase"]` from `state["step"]` until it hands over to the next phase (or to None)."""
    import torch
    import ray.train.torch

    from actors import training as T
    from toy.model import T5_LENGTH
    from toy.vae import VaeLoss

    phase, pipe = state["phase"], w.pipe
    pc = w.config[phase]
    if phase == "vae":
        module = ray.train.torch.prepare_model(VaeLoss(pipe.vae))
        params = pipe.vae.parameters()
    else:
        pipe.vae.eval()
        module = ray.train.torch.prepare_model(pipe.transformer)
        # all weights, or only the adapter's (add_lora froze the rest)
        params = [p for p in pipe.transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(pc["lr"]), weight_decay=0.0)
    if saved is not None and saved.get("optimizer_phase") == phase:
        optimizer.load_state_dict(saved["optimizer"])
    val_src, val_tgt, val_text = w.val_records
    val_batch = (T.to_pixels(np.concatenate([val_src, val_tgt])).to(w.device) if phase == "vae" else
                 _to(T.encode_batch(pipe, val_src, val_tgt, val_text, T5_LENGTH), w.device))
    recent: list[float] = []
    t_last = time.perf_counter()
    while state["phase"] == phase:   # a finished phase hands over to the next (or to None) itself
        step = state["step"]
        lr = _lr(pc, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        recent.append(_train_step(w, phase, step, module, optimizer))
        state["step"] = step + 1
        done = state["step"] >= int(pc["steps"])
        if state["step"] % int(w.config["report_every"]) == 0 or done:
            now = time.perf_counter()
            state["wall_s"] += now - t_last
            seconds = (now - t_last) / len(recent)
            t_last = now
            row = _log_row(w, state, phase, lr, float(np.mean(recent)), seconds, val_batch, done)
            recent = []
            _end_of_report(w, state, phase, row, optimizer, val_batch, done)


def _train_step(w: _Worker, phase: str, step: int, module: Any, optimizer: Any) -> float:
    """One optimizer step of `phase` on this worker's records of `step`; returns the loss."""
    import torch

    from actors import training as T
    from toy.model import T5_LENGTH
    from toy.vae import vae_step

    pc, data_seed = w.config[phase], int(w.config["data"]["seed"])
    per_worker = max(1, int(pc["batch_size"]) // w.world)
    # record indices: disjoint per (phase, step, rank); the phase offset keeps VAE and DiT data apart
    start = ((PHASES.index(phase) * 10_000_000) + step * w.world + w.rank) * per_worker
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence(
        [data_seed, PHASES.index(phase), step, w.rank]).generate_state(1)[0]))
    src, tgt, text = batch_arrays(data_seed, start, per_worker, w.size, w.config["data"].get("categories"))
    if phase == "vae":
        # sources and targets alike, as random crops: the VAE is convolutional, and a crop costs a
        # quarter of a full image per pixel of gradient signal
        imgs = _crops(np.concatenate([src[0::2], tgt[1::2]]), int(pc.get("crop", w.size)), gen)
        return vae_step(module, optimizer, T.to_pixels(imgs).to(w.device))["loss"]
    batch = _to(T.encode_batch(w.pipe, src, tgt, text, T5_LENGTH), w.device)
    return T.transformer_step(w.pipe, optimizer, batch, gen, model=module,
                              reference_drop=drop_range(pc.get("reference_drop")),
                              edit_weight=float(pc.get("edit_weight") or 0.0))


def _log_row(w: _Worker, state: dict[str, Any], phase: str, lr: float, loss: float, seconds: float, val_batch: Any,
             done: bool) -> dict[str, Any]:
    """Validate, append the report's row to the log (and, on rank 0, to loss.csv and stdout); returns the row."""
    from actors import training as T

    pc = w.config[phase]
    v = _validate(w.pipe, phase, val_batch)
    row = {"phase": phase, "step": state["step"], "loss": loss, "val": v,
           "lr": lr, "seconds": seconds, "wall_s": state["wall_s"]}
    if phase == "transformer":
        row["val_drop"] = _validate_drop(w.pipe, val_batch, pc.get("val_drop"))
        if done:
            state["val_sweep"] = {f"{r:g}": T.validation_loss(w.pipe, val_batch, float(r))
                                  for r in pc.get("val_drop_sweep") or ()}
    state["log"].append(row)
    if w.rank == 0:
        _write_log(w.log_path, state["log"])
        eta = (int(pc["steps"]) - state["step"]) * seconds
        at_drop = "" if row.get("val_drop") is None else f" val@drop {row['val_drop']:.4f}"
        print(f"[{phase} {state['step']}/{pc['steps']}] loss {row['loss']:.4f} val {v:.4f}{at_drop} "
              f"lr {lr:.2e} {seconds:.2f} s/step, phase eta {eta / 60:.1f} min", flush=True)
    return row


def _end_of_report(w: _Worker, state: dict[str, Any], phase: str, row: dict[str, Any], optimizer: Any,
                   val_batch: Any, done: bool) -> None:
    """Hand a finished phase over (the VAE's latent statistics first), and checkpoint when it is time."""
    from toy.vae import set_latent_normalisation

    if phase == "vae" and done:
        # latent statistics -> shift/scale, as the real FLUX VAE config carries them
        w.pipe.vae.eval()
        shift, scale = set_latent_normalisation(w.pipe, val_batch)
        state["vae_stats"] = {"shift_factor": shift, "scaling_factor": scale}
        state["phase"] = "transformer"
        state["step"] = 0
    elif done:
        state["phase"] = None
    if state["step"] % int(w.config["checkpoint_every"]) == 0 or done or state["phase"] != phase:
        _report(w.pipe, optimizer, phase, state, row, w.rank, final=state["phase"] is None, lora=w.lora)


def start_from_vae(pipe, folder: str) -> dict[str, Any]:
    """Load the trained VAE of another run's checkpoint (`folder/state.pt`) and return the state of a run
    that has just finished its VAE phase. The VAE phase does not depend on the transformer's config (its own
    seed, data and noise streams), so this equals running it again, and its log rows come along."""
    import torch

    saved = torch.load(os.path.join(os.path.expanduser(folder), "state.pt"), map_location="cpu",
                       weights_only=False)
    if not saved.get("vae_stats"):
        raise ValueError(f"init_from {folder}: that run has not finished its VAE phase")
    pipe.vae.load_state_dict(saved["vae"])
    pipe.vae.register_to_config(**saved["vae_stats"])
    log = [r for r in saved["log"] if r["phase"] == "vae"]
    return {"phase": "transformer", "step": 0, "log": log, "vae_stats": saved["vae_stats"],
            "wall_s": log[-1]["wall_s"] if log else 0.0}


def is_pipeline_folder(folder: str | None) -> bool:
    """A folder written by `save_pretrained` (as opposed to a run's checkpoint folder)."""
    return bool(folder) and (Path(os.path.expanduser(folder)) / "model_index.json").is_file()


def load_init_pipeline(folder: str, model_cfg: Any) -> Any:
    """The pipeline to fine-tune, in fp32 on the CPU (the worker moves it); its transformer must be the one the
    config's model section describes, so that the config says what was trained."""
    import torch

    import actors

    pipe = actors.load_pipeline("toy-flux-kontext", path=os.path.expanduser(folder), device="cpu",
                                dtype=torch.float32)
    want = {"num_layers": model_cfg.num_layers, "num_single_layers": model_cfg.num_single_layers,
            "num_attention_heads": model_cfg.num_attention_heads,
            "attention_head_dim": model_cfg.attention_head_dim, "axes_dims_rope": list(model_cfg.axes_dims_rope)}
    have = {k: list(v) if isinstance(v, (list, tuple)) else v
            for k, v in ((k, pipe.transformer.config[k]) for k in want)}
    if have != want:
        raise ValueError(f"init_from {folder}: its transformer {have} is not the config's model {want}")
    if pipe.vae.config.sample_size != model_cfg.image_size:
        # progressive resolution (as FLUX and SD3 are trained): the same weights continue on a larger token
        # grid; the VAE is convolutional and RoPE positions simply extend
        pipe.vae.register_to_config(sample_size=model_cfg.image_size)
    return pipe


def start_from_pipeline(pipe: Any) -> dict[str, Any]:
    """The state of a fine-tuning run from a saved pipeline: transformer phase at step 0, the folder's VAE and
    its latent statistics as they are, and a log and wall time of its own."""
    vae = pipe.vae.config
    stats = {"shift_factor": float(vae.shift_factor), "scaling_factor": float(vae.scaling_factor)}
    return {"phase": "transformer", "step": 0, "log": [], "vae_stats": stats, "wall_s": 0.0}


def add_lora_from_config(pipe: Any, config: dict[str, Any]) -> bool:
    """Add the config's LoRA adapter to the transformer (freezing its base weights); False when there is none."""
    if not config.get("lora_rank"):
        return False
    import torch

    from actors.lora import DEFAULT_TARGETS, add_lora

    # peft's random A matrices: seeded by the run's data seed, without touching the process' global generator
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config["data"]["seed"]))
        add_lora(pipe.transformer, rank=int(config["lora_rank"]), alpha=config.get("lora_alpha"),
                 targets=config.get("lora_targets") or DEFAULT_TARGETS)
    return True


def restore_weights(pipe: Any, saved: dict[str, Any], lora: bool) -> None:
    """A checkpoint's weights back into `pipe`: with LoRA the transformer entry holds the adapter only."""
    from actors.lora import load_adapter_state

    pipe.vae.load_state_dict(saved["vae"])
    if lora:
        load_adapter_state(pipe.transformer, saved["transformer"])
    else:
        pipe.transformer.load_state_dict(saved["transformer"])
    if saved["vae_config"]:
        pipe.vae.register_to_config(**saved["vae_config"])


def drop_range(value: Any) -> tuple[float, float] | None:
    """`transformer.reference_drop` as (low, high), or None when off."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"transformer.reference_drop must be [low, high] or null, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"transformer.reference_drop must satisfy 0 <= low <= high <= 1, got {value!r}")
    return low, high


def check_config(cfg: dict[str, Any]) -> None:
    """Fail in the driver, before any worker starts, on fine-tuning options that cannot work."""
    drop_range(cfg["transformer"].get("reference_drop"))
    from toy.data import CATEGORIES

    unknown = set(cfg["data"].get("categories") or ()) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"data.categories: unknown {sorted(unknown)}; accepted: {', '.join(CATEGORIES)}")
    if float(cfg["transformer"].get("edit_weight") or 0.0) < 0:
        raise ValueError(f"transformer.edit_weight must be >= 0, got {cfg['transformer']['edit_weight']!r}")
    for ratio in [cfg["transformer"].get("val_drop"), *(cfg["transformer"].get("val_drop_sweep") or ())]:
        if ratio is not None and not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"transformer.val_drop / val_drop_sweep take ratios in [0, 1], got {ratio!r}")
    init = cfg.get("init_from")
    if init and not is_pipeline_folder(init) and not (Path(os.path.expanduser(init)) / "state.pt").is_file():
        raise ValueError(f"init_from {init}: neither a saved pipeline (model_index.json) "
                         "nor a run checkpoint (state.pt)")
    if cfg.get("lora_rank") is not None:
        if int(cfg["lora_rank"]) < 1:
            raise ValueError(f"lora_rank must be a positive integer, got {cfg['lora_rank']!r}")
        if not is_pipeline_folder(init):
            raise ValueError("lora_rank needs init_from = a saved pipeline folder: an adapter adapts a trained base")


def _crops(images, crop: int, gen):
    """One random crop per image, aligned to the VAE's 8 px grid so that latents stay in phase."""
    import torch

    if crop >= images.shape[1]:
        return images
    cells = (images.shape[1] - crop) // 8 + 1
    pos = torch.randint(0, cells, (len(images), 2), generator=gen) * 8
    return np.stack([im[y:y + crop, x:x + crop] for im, (y, x) in zip(images, pos.tolist())])


def _to(batch, device):
    for name in ("z_src", "z_tgt", "prompt_embeds", "pooled", "text_ids"):
        setattr(batch, name, getattr(batch, name).to(device))
    return batch


def _validate(pipe, phase: str, val_batch) -> float:
    """VAE: reconstruction PSNR (dB) of the fixed validation images; transformer: flow-matching loss on
    the fixed validation batch at fixed σ and noise (comparable across steps and runs)."""
    import torch

    from actors import training as T
    from metrics.pixel import psnr

    with torch.no_grad():
        if phase == "vae":
            pipe.vae.eval()
            recon = pipe.vae.decode(pipe.vae.encode(val_batch).latent_dist.mode(), return_dict=False)[0]
            return float(np.mean([psnr(a, b) for a, b in zip(T.to_uint8(recon), T.to_uint8(val_batch))]))
    return T.validation_loss(pipe, val_batch)


def _validate_drop(pipe, val_batch, ratio: float | None) -> float | None:
    """The validation loss with a fixed share of the reference tokens dropped (None when not asked for)."""
    from actors import training as T

    return None if ratio is None else T.validation_loss(pipe, val_batch, float(ratio))


def _report(pipe, optimizer, optimizer_phase: str, state: dict[str, Any], row: dict[str, Any], rank: int,
            final: bool, lora: bool = False) -> None:
    """A checkpoint: state.pt (weights, optimizer, log), plus with LoRA the adapter alone in `lora/` (loadable
    as it is), and at the end the full pipeline in `model/` (full fine-tuning)."""
    import torch
    import ray.train

    from actors.lora import adapter_state, save_lora

    metrics = {k: v for k, v in row.items() if v is not None}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            weights = adapter_state(pipe.transformer) if lora else pipe.transformer.state_dict()
            torch.save({**state, "vae": pipe.vae.state_dict(), "transformer": weights,
                        "vae_config": state["vae_stats"], "optimizer": optimizer.state_dict(),
                        "optimizer_phase": optimizer_phase},
                       os.path.join(tmp, "state.pt"))
            if lora:
                save_lora(pipe, os.path.join(tmp, "lora"))
            elif final:
                pipe.save_pretrained(os.path.join(tmp, "model"), safe_serialization=True)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


# ------------------------------------------------------------------ the driver

def resolve_model(cfg: dict[str, Any]) -> dict[str, Any]:
    """The model section plus the toy vocabulary as whole-word tokens."""
    from toy.data import vocabulary

    model = dict(cfg["model"])
    model.setdefault("words", vocabulary())
    return model


def use_gpu(setting: Any) -> bool:
    if setting == "auto":
        import ray

        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(setting)


def fit(cfg: dict[str, Any], fresh: bool = False, max_failures: int = 2) -> dict[str, Any]:
    """Train a config that `check_config` accepted on a `TorchTrainer` (Ray already initialised), resuming
    from the latest checkpoint of `storage_path/name` unless `fresh`; write `output` (the pipeline, or the
    LoRA adapter alone) with `loss.json` beside it. Returns the run's one-line summary."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if cfg.get("init_from") and "://" not in cfg["init_from"]:
        # workers may run elsewhere (another directory, another node of a shared file system)
        cfg["init_from"] = os.path.abspath(os.path.expanduser(cfg["init_from"]))
    storage = cfg["storage_path"]
    storage = storage if "://" in storage else os.path.abspath(os.path.expanduser(storage))
    name = cfg["name"] + (time.strftime("-%Y%m%d-%H%M%S") if fresh else "")
    # the live loss log is a local file; with object storage it goes to the local cache instead
    log_dir = os.path.join(storage if "://" not in storage else os.path.expanduser("~/.cache/dropedit/train"), name)
    gpu = use_gpu(cfg["scaling"].get("use_gpu", "auto"))
    loop_cfg = {**cfg, "model_resolved": resolve_model(cfg), "log_dir": log_dir}
    trainer = TorchTrainer(
        train_loop, train_loop_config=loop_cfg,
        scaling_config=ScalingConfig(num_workers=int(cfg["scaling"]["num_workers"]), use_gpu=gpu,
                                     resources_per_worker={"CPU": int(cfg["threads"])} if not gpu else None),
        run_config=RunConfig(name=name, storage_path=storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=int(max_failures))),
    )
    started = time.perf_counter()
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    out = Path(cfg["output"])
    state = _copy_output(result.checkpoint, out, lora=bool(cfg.get("lora_rank")))
    _write_summary(out, cfg, loop_cfg["model_resolved"], name, storage, state, time.perf_counter() - started)
    return {"output": str(out), "run": name, "wall_s": round(state["wall_s"], 1),
            "final": state["log"][-1] if state["log"] else None, "val_sweep": state.get("val_sweep")}


def _copy_output(checkpoint: Any, out: Path, lora: bool) -> dict[str, Any]:
    """The last checkpoint's final pipeline (or adapter) into `out`, replacing what was there; returns its
    saved run state."""
    import torch

    with checkpoint.as_directory() as d:
        model_dir = Path(d) / ("lora" if lora else "model")
        if not model_dir.is_dir():
            raise RuntimeError(f"the last checkpoint ({checkpoint.path}) holds no final {model_dir.name}")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(model_dir, out)
        return torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=False)


def _model_name(run_name: str) -> str:
    """The `actors.load_pipeline` name of a trained toy: its run name when registered, else the v1 toy's."""
    from actors.models import MODELS

    return run_name if run_name in MODELS else "toy-flux-kontext"


def _write_summary(out: Path, cfg: dict[str, Any], model: dict[str, Any], name: str, storage: str,
                   state: dict[str, Any], this_call_s: float) -> None:
    """`out/loss.json` (config, how to load the output, the log) and, for a full model, its edit defaults."""
    lora = bool(cfg.get("lora_rank"))
    keys = ("data", "vae", "transformer", "threads", "scaling", "init_from", "lora_rank", "lora_alpha", "lora_targets")
    summary = {"run": name, "storage": storage, "model_config": model,
               "train_config": {k: cfg[k] for k in keys},
               "load": {"name": _model_name(cfg["name"]), "path": cfg["init_from"] if lora else str(out),
                        "lora": str(out) if lora else None},
               "wall_s": state["wall_s"], "this_call_s": this_call_s,
               "val_sweep": state.get("val_sweep"), "log": state["log"]}
    (out / "loss.json").write_text(json.dumps(summary, indent=1))
    if not lora:   # what the model was trained on becomes its edit defaults (actors.model_defaults)
        from actors.model_defaults import ModelDefaults, write_defaults
        from toy.model import T5_LENGTH

        size = int(model.get("image_size", 128))
        write_defaults(out, ModelDefaults(T5_LENGTH, ((size, size),)),
                       f"trained on {T5_LENGTH}-token T5 prompts at {size}x{size} (MODEL_CARD.md)")
