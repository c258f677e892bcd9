"""The driver: the Ray Data inputs, a `TorchTrainer` over N workers that resumes from the latest checkpoint of
`storage_path/name` (local or object storage), and the output folder (the adapter, or the pipeline) with
`loss.json` beside it."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .config import FinetuneConfig


def use_gpu(setting: Any) -> bool:
    if setting == "auto":
        import ray

        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(setting)


def _storage(cfg: FinetuneConfig) -> tuple[str, Any]:
    """(storage path, its pyarrow filesystem or None): S3 through `pipeline.storage`, which honours the
    endpoint variables that Ray's own resolution may not."""
    from pipeline.storage import filesystem_for, is_s3

    if is_s3(cfg.storage_path):
        fs, path = filesystem_for(cfg.storage_path, cfg.data.storage or None)
        return path, fs
    return os.path.abspath(os.path.expanduser(cfg.storage_path)), None


def log_uri(cfg: FinetuneConfig, name: str) -> str:
    """Where rank 0 keeps the live loss log (`loss.jsonl`, rewritten at every report): beside the checkpoints."""
    from pipeline.storage import is_s3, join_uri

    base = cfg.storage_path if is_s3(cfg.storage_path) else os.path.abspath(os.path.expanduser(cfg.storage_path))
    return join_uri(base, name, "loss.jsonl")


def fit(cfg: FinetuneConfig, fresh: bool = False, max_failures: int = 2) -> dict[str, Any]:
    """Train on a `TorchTrainer` (Ray already initialised); write `cfg.output`; return a one-line summary."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .data import datasets
    from .worker import train_loop

    workers, gpu = cfg.scaling.num_workers, use_gpu(cfg.scaling.use_gpu)
    name = cfg.name + (time.strftime("-%Y%m%d-%H%M%S") if fresh else "")
    storage, fs = _storage(cfg)
    trainer = TorchTrainer(
        train_loop, train_loop_config={"cfg": cfg.model_dump(mode="json"), "log_uri": log_uri(cfg, name)},
        datasets=datasets(cfg, workers), dataset_config=DataConfig(datasets_to_split=[]),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu,
                                     resources_per_worker=None if gpu else {"CPU": cfg.scaling.threads}),
        run_config=RunConfig(name=name, storage_path=storage, storage_filesystem=fs,
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
    started = time.perf_counter()
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    state = copy_output(result.checkpoint, Path(cfg.output), lora=cfg.lora is not None)
    write_summary(cfg, name, state, time.perf_counter() - started)
    return {"output": cfg.output, "run": name, "steps": state["step"], "resumed_at": state["resumed_at"],
            "wall_s": round(state["wall_s"], 1),
            "final": state["log"][-1] if state["log"] else None}


def copy_output(checkpoint: Any, out: Path, lora: bool) -> dict[str, Any]:
    """The last checkpoint's adapter (`lora/`) or pipeline (`model/`) into `out`; returns its saved state."""
    import torch

    with checkpoint.as_directory() as d:
        src = Path(d) / ("lora" if lora else "model")
        if not src.is_dir():
            raise RuntimeError(f"the last checkpoint ({checkpoint.path}) holds no {src.name}/")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(src, out)
        state = torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=False)
    return {k: state.get(k, []) for k in ("step", "log", "wall_s", "resumed_at")}


def write_summary(cfg: FinetuneConfig, name: str, state: dict[str, Any], this_call_s: float) -> None:
    """`loss.json`: the config, how to load the result, the loss log."""
    lora = cfg.lora is not None
    load = {"name": cfg.model.name, "path": cfg.model.path if lora else cfg.output,
            "lora": cfg.output if lora else None}
    summary = {"run": name, "config": cfg.model_dump(mode="json"), "load": load, "steps": state["step"],
               "resumed_at": state["resumed_at"],
               "wall_s": state["wall_s"], "this_call_s": this_call_s, "log": state["log"]}
    (Path(cfg.output) / "loss.json").write_text(json.dumps(summary, indent=1))
