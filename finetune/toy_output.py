"""What the driver adds for a toy run: the workers' config (the model section resolved, where loss.csv goes), and
the toy's `loss.json` (config, how to load the output, the log: what `toy.card` reads) with, for a full model,
its edit defaults (`actors.model_defaults`)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .toy_config import ToyTrainConfig


def resolve_model(cfg: ToyTrainConfig) -> dict[str, Any]:
    """The model section plus the toy vocabulary as whole-word tokens."""
    from toy.data import vocabulary

    model = dict(cfg.model)
    model.setdefault("words", vocabulary())
    return model


def toy_loop_config(cfg: ToyTrainConfig, storage: str, name: str) -> dict[str, Any]:
    """`train_loop_config` of a toy run (its paths checked and made absolute: workers may run elsewhere)."""
    cfg.check_paths()
    init = cfg.init_from
    if init and "://" not in init:
        init = os.path.abspath(os.path.expanduser(init))
    # the live loss log is a local file; with object storage it goes to the local cache instead
    log_dir = os.path.join(storage if "://" not in cfg.storage_path else os.path.expanduser("~/.cache/dropedit/train"),
                           name)
    return {"kind": "toy", "cfg": cfg.model_copy(update={"init_from": init}).model_dump(mode="json"),
            "model_resolved": resolve_model(cfg), "log_dir": log_dir}


def _model_name(run_name: str) -> str:
    """The `actors.load_pipeline` name of a trained toy: its run name when registered, else the v1 toy's."""
    from actors.models import MODELS

    return run_name if run_name in MODELS else "toy-flux-kontext"


def write_toy_summary(cfg: ToyTrainConfig, loop_cfg: dict[str, Any], name: str, storage: str,
                      state: dict[str, Any], this_call_s: float) -> dict[str, Any]:
    """`output/loss.json` and the edit defaults; returns the run's one-line summary."""
    out, lora, model = Path(cfg.output), bool(cfg.lora_rank), loop_cfg["model_resolved"]
    init = loop_cfg["cfg"]["init_from"]
    keys = ("data", "vae", "transformer", "threads", "scaling", "init_from", "lora_rank", "lora_alpha", "lora_targets",
            "grow", "prediction", "text_order")
    train_config = {k: v for k, v in loop_cfg["cfg"].items() if k in keys}
    summary = {"run": name, "storage": storage, "model_config": model, "train_config": train_config,
               "load": {"name": _model_name(cfg.name), "path": init if lora else str(out),
                        "lora": str(out) if lora else None},
               "resumed_at": state["resumed_at"], "wall_s": state["wall_s"], "this_call_s": this_call_s,
               "val_sweep": state.get("val_sweep"), "log": state["log"]}
    (out / "loss.json").write_text(json.dumps(summary, indent=1))
    if not lora:   # what the model was trained on becomes its edit defaults (actors.model_defaults)
        from actors.model_defaults import ModelDefaults, write_defaults
        from toy.model import T5_LENGTH

        size = int(model.get("image_size", 128))
        write_defaults(out, ModelDefaults(T5_LENGTH, ((size, size),), prediction=cfg.prediction),
                       f"trained on {T5_LENGTH}-token T5 prompts at {size}x{size} (MODEL_CARD.md)")
    return {"output": str(out), "run": name, "wall_s": round(state["wall_s"], 1),
            "final": state["log"][-1] if state["log"] else None, "val_sweep": state.get("val_sweep")}
