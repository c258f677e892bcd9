"""The one training driver (`python -m jobs.train`): the inputs (a manifest's Ray Data datasets, or none for the
toy, whose workers make their own records), a `TorchTrainer` over N workers that resumes from the latest checkpoint of
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
from .toy_config import ToyTrainConfig


def use_gpu(setting: Any) -> bool:
    if setting == "auto":
        import ray

        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(setting)


def _storage(storage_path: str, options: dict[str, Any] | None) -> tuple[str, Any]:
    """(storage path, its pyarrow filesystem or None): S3 through `pipeline.storage`, which honours the
    endpoint variables that Ray's own resolution may not."""
    from pipeline.storage import filesystem_for, is_s3

    if is_s3(storage_path):
        fs, path = filesystem_for(storage_path, options)
        return path, fs
    return os.path.abspath(os.path.expanduser(storage_path)), None


def log_uri(cfg: FinetuneConfig, name: str) -> str:
    """Where rank 0 keeps the live loss log (`loss.jsonl`, rewritten at every report): beside the checkpoints."""
    from pipeline.storage import is_s3, join_uri

    base = cfg.storage_path if is_s3(cfg.storage_path) else os.path.abspath(os.path.expanduser(cfg.storage_path))
    return join_uri(base, name, "loss.jsonl")


def fit(cfg: FinetuneConfig | ToyTrainConfig, fresh: bool = False, max_failures: int = 2) -> dict[str, Any]:
    """Train on a `TorchTrainer` (Ray already initialised), resuming from the latest checkpoint of
    `storage_path/name` unless `fresh`; write `cfg.output` (the adapter or the pipeline) with `loss.json`
    beside it; return a one-line summary. A manifest fine-tune reads its records through Ray Data; the toy
    makes its own (`toy_source.py`)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .worker import train_loop

    toy = isinstance(cfg, ToyTrainConfig)
    workers, gpu = cfg.scaling.num_workers, use_gpu(cfg.scaling.use_gpu)
    threads = cfg.threads if toy else cfg.scaling.threads
    name = cfg.name + (time.strftime("-%Y%m%d-%H%M%S") if fresh else "")
    storage, fs = _storage(cfg.storage_path, None if toy else cfg.data.storage or None)
    if toy:
        from .toy_output import toy_loop_config
        loop_cfg, inputs = toy_loop_config(cfg, storage, name), None
    else:
        from .data import datasets
        loop_cfg = {"kind": "manifest", "cfg": cfg.model_dump(mode="json"), "log_uri": log_uri(cfg, name)}
        inputs = datasets(cfg, workers)
    trainer = TorchTrainer(
        train_loop, train_loop_config=loop_cfg, datasets=inputs, dataset_config=DataConfig(datasets_to_split=[]),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu,
                                     resources_per_worker=None if gpu else {"CPU": threads}),
        run_config=RunConfig(name=name, storage_path=storage, storage_filesystem=fs,
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
    started = time.perf_counter()
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    lora = bool(cfg.lora_rank) if toy else cfg.lora is not None
    state = copy_output(result.checkpoint, Path(cfg.output), lora=lora)
    if toy:
        from .toy_output import write_toy_summary
        return write_toy_summary(cfg, loop_cfg, name, storage, state, time.perf_counter() - started)
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
    return {**{k: v for k, v in state.items() if k not in ("weights", "optimizer", "vae")},
            **{k: state.get(k, []) for k in ("step", "log", "wall_s", "resumed_at")}}


def write_summary(cfg: FinetuneConfig, name: str, state: dict[str, Any], this_call_s: float) -> None:
    """`loss.json`: the config, how to load the result, the loss log."""
    lora = cfg.lora is not None
    load = {"name": cfg.model.name, "path": cfg.model.path if lora else cfg.output,
            "lora": cfg.output if lora else None}
    summary = {"run": name, "config": cfg.model_dump(mode="json"), "load": load, "steps": state["step"],
               "resumed_at": state["resumed_at"],
               "wall_s": state["wall_s"], "this_call_s": this_call_s, "log": state["log"]}
    (Path(cfg.output) / "loss.json").write_text(json.dumps(summary, indent=1))
