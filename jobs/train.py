"""`python -m jobs.train CONFIG`: train the toy editing model on Ray Train (a `TorchTrainer`).

Two phases in one run: the VAE on reconstruction, then the transformer on conditional flow matching
(see `actors.training`). Every worker makes its own records for every step from `pipeline.toy_data`
(record indices are a function of phase, step and rank), and every step's noise comes from a generator
seeded by the same numbers, so a resumed run continues exactly where its last checkpoint left it.

Re-running the same command resumes from the latest checkpoint in `storage_path/name` (Ray Train V2
restores it); `--fresh` starts over under a new run name. Checkpoints hold the model, the optimizer and the
loss log; rank 0 also mirrors the log to `storage_path/name/loss.csv` as it goes. At the end the trained
pipeline is written with `save_pretrained` (safetensors) to `output`, with `loss.json` beside it.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

DEFAULTS: dict[str, Any] = {
    "name": "toy-flux-kontext",
    "storage_path": "~/.cache/dropedit/train",
    "output": "models/toy-flux-kontext",
    "threads": 1,
    "scaling": {"num_workers": 1, "use_gpu": "auto"},
    "model": {},
    "data": {"seed": 0, "val_seed": 999, "val_n": 16},
    "vae": {"steps": 2500, "batch_size": 8, "lr": 2e-3, "warmup": 50, "crop": 64},
    "transformer": {"steps": 4000, "batch_size": 16, "lr": 5e-4, "warmup": 100},
    "checkpoint_every": 100,
    "report_every": 25,
    "init_from": None,
}
PHASES = ("vae", "transformer")
LOG_FIELDS = ("phase", "step", "loss", "val", "lr", "seconds", "wall_s")


def load_config(path: str | None, overrides: list[str] = ()) -> dict[str, Any]:
    """Defaults, then the YAML file, then `key.sub=value` overrides (YAML values)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        with open(path) as f:
            _merge(cfg, yaml.safe_load(f) or {}, "")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return cfg


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


def _records(seed: int, start: int, n: int, size: int):
    import numpy as np

    from pipeline.toy_data import make_record

    recs = [make_record(seed, i, size) for i in range(start, start + n)]
    return (np.stack([r.source for r in recs]), np.stack([r.target for r in recs]),
            [r.instruction for r in recs])


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import numpy as np
    import torch
    import ray.train
    import ray.train.torch

    from actors import training as T

    torch.set_num_threads(int(config["threads"]))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    model_cfg = T.ToyModelConfig.from_mapping(config["model_resolved"])
    size = model_cfg.image_size
    pipe = T.build_toy_flux_kontext(model_cfg)
    state: dict[str, Any] = {"phase": PHASES[0], "step": 0, "log": [], "wall_s": 0.0, "vae_stats": None}

    checkpoint = ray.train.get_checkpoint()
    saved = None
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            saved = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=False)
        pipe.vae.load_state_dict(saved["vae"])
        pipe.transformer.load_state_dict(saved["transformer"])
        if saved["vae_config"]:
            pipe.vae.register_to_config(**saved["vae_config"])
        state = {k: saved[k] for k in state}
        if state["phase"] is None and state["step"] < int(config["transformer"]["steps"]):
            state["phase"] = "transformer"   # a finished run given more steps trains on
    elif config.get("init_from"):
        state = start_from_vae(pipe, config["init_from"])
    pipe.to(device)
    data_seed, val = int(config["data"]["seed"]), config["data"]
    val_src, val_tgt, val_text = _records(int(val["val_seed"]), 0, int(val["val_n"]), size)
    log_path = Path(config["log_dir"]) / "loss.csv"

    while state["phase"] is not None:
        phase = state["phase"]
        pc = config[phase]
        if phase == "vae":
            module = ray.train.torch.prepare_model(T.VaeLoss(pipe.vae))
            params = pipe.vae.parameters()
        else:
            pipe.vae.eval()
            module = ray.train.torch.prepare_model(pipe.transformer)
            params = pipe.transformer.parameters()
        optimizer = torch.optim.AdamW(params, lr=float(pc["lr"]), weight_decay=0.0)
        if saved is not None and saved.get("optimizer_phase") == phase:
            optimizer.load_state_dict(saved["optimizer"])
        val_batch = (T.to_pixels(np.concatenate([val_src, val_tgt])).to(device) if phase == "vae" else
                     _to(T.encode_batch(pipe, val_src, val_tgt, val_text), device))
        per_worker = max(1, int(pc["batch_size"]) // world)
        recent: list[float] = []
        t_last = time.perf_counter()
        while state["phase"] == phase:   # a finished phase hands over to the next (or to None) itself
            step = state["step"]
            lr = _lr(pc, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # record indices: disjoint per (phase, step, rank); the phase offset keeps VAE and DiT data apart
            start = ((PHASES.index(phase) * 10_000_000) + step * world + rank) * per_worker
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence(
                [data_seed, PHASES.index(phase), step, rank]).generate_state(1)[0]))
            src, tgt, text = _records(data_seed, start, per_worker, size)
            t0 = time.perf_counter()
            if phase == "vae":
                # sources and targets alike, as random crops: the VAE is convolutional, and a crop costs a
                # quarter of a full image per pixel of gradient signal
                imgs = _crops(np.concatenate([src[0::2], tgt[1::2]]), int(pc.get("crop", size)), gen)
                loss = T.vae_step(module, optimizer, T.to_pixels(imgs).to(device))["loss"]
            else:
                batch = _to(T.encode_batch(pipe, src, tgt, text), device)
                loss = T.transformer_step(pipe, optimizer, batch, gen, model=module)
            recent.append(loss)
            state["step"] = step + 1
            done = state["step"] >= int(pc["steps"])
            if state["step"] % int(config["report_every"]) == 0 or done:
                now = time.perf_counter()
                state["wall_s"] += now - t_last
                seconds = (now - t_last) / len(recent)
                t_last = now
                v = _validate(pipe, phase, val_batch, device)
                row = {"phase": phase, "step": state["step"], "loss": float(np.mean(recent)), "val": v,
                       "lr": lr, "seconds": seconds, "wall_s": state["wall_s"]}
                recent = []
                state["log"].append(row)
                if rank == 0:
                    _write_log(log_path, state["log"])
                    eta = (int(pc["steps"]) - state["step"]) * seconds
                    print(f"[{phase} {state['step']}/{pc['steps']}] loss {row['loss']:.4f} val {v:.4f} "
                          f"lr {lr:.2e} {seconds:.2f} s/step, phase eta {eta / 60:.1f} min", flush=True)
                if phase == "vae" and done:
                    # latent statistics -> shift/scale, as the real FLUX VAE config carries them
                    pipe.vae.eval()
                    shift, scale = T.set_latent_normalisation(pipe, val_batch)
                    state["vae_stats"] = {"shift_factor": shift, "scaling_factor": scale}
                    state["phase"] = "transformer"
                    state["step"] = 0
                elif done:
                    state["phase"] = None
                if state["step"] % int(config["checkpoint_every"]) == 0 or done or state["phase"] != phase:
                    _report(pipe, optimizer, phase, state, row, rank, final=state["phase"] is None)
        saved = None   # a new phase builds its own optimizer


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


def _validate(pipe, phase: str, val_batch, device) -> float:
    """VAE: reconstruction PSNR (dB) of the fixed validation images; transformer: flow-matching loss on
    the fixed validation batch at fixed σ and noise (comparable across steps and runs)."""
    import numpy as np
    import torch

    from actors import training as T

    with torch.no_grad():
        if phase == "vae":
            pipe.vae.eval()
            recon = pipe.vae.decode(pipe.vae.encode(val_batch).latent_dist.mode(), return_dict=False)[0]
            return float(np.mean([T.psnr(a, b) for a, b in zip(T.to_uint8(recon), T.to_uint8(val_batch))]))
        pipe.transformer.eval()
        gen = torch.Generator().manual_seed(12345)
        n, tokens = val_batch.z_tgt.shape[:2]
        sigmas = torch.linspace(0.1, 0.9, n)
        noise = torch.randn(val_batch.z_tgt.shape, generator=gen).to(device)
        side = int(math.isqrt(tokens)) * 2 * pipe.vae_scale_factor
        noisy_ids, source_ids = T.image_ids(pipe, side, device)
        return float(T.flow_matching_loss(pipe.transformer, val_batch.z_src, val_batch.z_tgt, val_batch.prompt_embeds,
                                          val_batch.pooled, val_batch.text_ids, noisy_ids, source_ids,
                                          sigmas.to(device), noise))


def _report(pipe, optimizer, optimizer_phase: str, state: dict[str, Any], row: dict[str, Any], rank: int,
            final: bool) -> None:
    import torch
    import ray.train

    metrics = {k: v for k, v in row.items()}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            torch.save({**state, "vae": pipe.vae.state_dict(), "transformer": pipe.transformer.state_dict(),
                        "vae_config": state["vae_stats"], "optimizer": optimizer.state_dict(),
                        "optimizer_phase": optimizer_phase},
                       os.path.join(tmp, "state.pt"))
            if final:
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
    from pipeline.toy_data import vocabulary

    model = dict(cfg["model"])
    model.setdefault("words", vocabulary())
    return model


def use_gpu(setting: Any) -> bool:
    if setting == "auto":
        import ray

        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(setting)


def run(args: argparse.Namespace) -> int:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .ablate import init_ray

    cfg = load_config(args.config, args.overrides)
    storage = cfg["storage_path"]
    storage = storage if "://" in storage else os.path.abspath(os.path.expanduser(storage))
    name = cfg["name"] + (time.strftime("-%Y%m%d-%H%M%S") if args.fresh else "")
    # the live loss log is a local file; with object storage it goes to the local cache instead
    log_dir = os.path.join(storage if "://" not in storage else os.path.expanduser("~/.cache/dropedit/train"), name)
    init_ray()
    gpu = use_gpu(cfg["scaling"].get("use_gpu", "auto"))
    loop_cfg = {**cfg, "model_resolved": resolve_model(cfg), "log_dir": log_dir}
    trainer = TorchTrainer(
        train_loop, train_loop_config=loop_cfg,
        scaling_config=ScalingConfig(num_workers=int(cfg["scaling"]["num_workers"]), use_gpu=gpu,
                                     resources_per_worker={"CPU": int(cfg["threads"])} if not gpu else None),
        run_config=RunConfig(name=name, storage_path=storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=int(args.max_failures))),
    )
    started = time.perf_counter()
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    out = Path(cfg["output"])
    with result.checkpoint.as_directory() as d:
        model_dir = Path(d) / "model"
        if not model_dir.is_dir():
            raise RuntimeError(f"the last checkpoint ({result.checkpoint.path}) holds no final model")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(model_dir, out)
        import torch

        state = torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=False)
    summary = {"run": name, "storage": storage, "model_config": loop_cfg["model_resolved"],
               "train_config": {k: cfg[k] for k in ("data", "vae", "transformer", "threads", "scaling", "init_from")},
               "wall_s": state["wall_s"], "this_call_s": time.perf_counter() - started, "log": state["log"]}
    (out / "loss.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({"output": str(out), "run": name, "wall_s": round(state["wall_s"], 1),
                      "final": state["log"][-1] if state["log"] else None}))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None, help="YAML training config (e.g. configs/train_toy.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, dotted keys, e.g. --set transformer.steps=10")
    p.add_argument("--fresh", action="store_true", help="start a new run instead of resuming `name`")
    p.add_argument("--max-failures", type=int, default=2, help="worker-group restarts from the last checkpoint")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
