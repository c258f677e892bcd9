"""How a toy training run starts: from its own last checkpoint when Ray Train restores one, else from `init_from`
(a saved pipeline: fine-tuning, transformer phase only; or another run's checkpoint folder: its trained VAE),
else from scratch; with the config's LoRA adapter when it asks for one."""
from __future__ import annotations

import os
from typing import Any

import torch

from .toy_config import GrowSpec, ToyTrainConfig, is_pipeline_folder


def fresh_state() -> dict[str, Any]:
    """The state of a run that has trained nothing: what a checkpoint carries besides the weights."""
    return {"phase": "vae", "step": 0, "log": [], "wall_s": 0.0, "vae_stats": None, "val_sweep": None,
            "recent": [], "resumed_at": []}


def start(cfg: ToyTrainConfig, model_cfg: Any, checkpoint: Any) -> tuple[Any, bool, dict[str, Any], Any]:
    """(pipeline, LoRA or not, run state, saved checkpoint state or None)."""
    from toy.model import build_toy_flux_kontext

    from .state import load_saved, restore_weights

    init = cfg.init_from
    if is_pipeline_folder(init):
        pipe = load_init_pipeline(init, model_cfg, cfg.grow)
    else:
        pipe = build_toy_flux_kontext(model_cfg)
    if cfg.text_order:
        from toy.text_order import order_text_encoder

        order_text_encoder(pipe.text_encoder_2, cfg.text_order)   # deterministic: a resume rebuilds the same
    lora = add_lora_from_config(pipe, cfg)
    state = fresh_state()
    saved = load_saved(checkpoint)
    set_prediction(pipe, cfg.prediction, fresh=saved is None)
    if saved is not None:
        restore_weights(pipe.transformer, saved, lora)
        pipe.vae.load_state_dict(saved["vae"])
        if saved["vae_stats"]:
            pipe.vae.register_to_config(**saved["vae_stats"])
        state = {k: saved.get(k, v) for k, v in state.items()}
        state["resumed_at"] = [*state["resumed_at"], state["step"]]
        if state["phase"] is None and state["step"] < cfg.transformer.steps:
            state["phase"] = "transformer"   # a finished run given more steps trains on
    elif is_pipeline_folder(init):
        state = {**state, **start_from_pipeline(pipe)}
    elif init:
        state = {**state, **start_from_vae(pipe, init)}
    return pipe, lora, state, saved


def set_prediction(pipe: Any, prediction: str, fresh: bool) -> None:
    """Put the transformer on the config's parameterisation: a velocity model switched to a copy prior starts
    with its output layer zeroed (only when nothing is restored over it); any other change is refused."""
    from actors.reference_residual import RESIDUAL_FLOW, apply_prediction, prediction_of

    from .toy_copy_prior import start_reference_residual

    has = prediction_of(pipe.transformer)
    if has == prediction:
        return
    if has != "velocity":
        raise ValueError(f"init_from predicts {has}: set prediction: {has}")
    if fresh:
        start_reference_residual(pipe.transformer, residual_input=prediction == RESIDUAL_FLOW)
    else:
        apply_prediction(pipe.transformer, prediction)


def start_from_vae(pipe: Any, folder: str) -> dict[str, Any]:
    """Load the trained VAE of another run's checkpoint (`folder/state.pt`) and return the state of a run
    that has just finished its VAE phase. The VAE phase does not depend on the transformer's config (its own
    seed, data and noise streams), so this equals running it again, and its log rows come along."""
    saved = torch.load(os.path.join(os.path.expanduser(folder), "state.pt"), map_location="cpu",
                       weights_only=False)
    if not saved.get("vae_stats"):
        raise ValueError(f"init_from {folder}: that run has not finished its VAE phase")
    pipe.vae.load_state_dict(saved["vae"])
    pipe.vae.register_to_config(**saved["vae_stats"])
    log = [r for r in saved["log"] if r["phase"] == "vae"]
    return {"phase": "transformer", "step": 0, "log": log, "vae_stats": saved["vae_stats"],
            "wall_s": log[-1]["wall_s"] if log else 0.0}


def load_init_pipeline(folder: str, model_cfg: Any, grow: GrowSpec | None = None) -> Any:
    """The pipeline to fine-tune, in fp32 on the CPU (the worker moves it); its transformer must be the one the
    config's model section describes, so that the config says what was trained; with `grow`, a transformer
    that differs only in fewer blocks is grown to the model section's (`finetune.toy_grow`). A run resuming
    from its own checkpoint grows again and then restores its weights over the grown model."""
    import actors

    pipe = actors.load_pipeline("toy-flux-kontext", path=os.path.expanduser(folder), device="cpu",
                                dtype=torch.float32)
    want = {"num_layers": model_cfg.num_layers, "num_single_layers": model_cfg.num_single_layers,
            "num_attention_heads": model_cfg.num_attention_heads,
            "attention_head_dim": model_cfg.attention_head_dim, "axes_dims_rope": list(model_cfg.axes_dims_rope)}
    have = {k: list(v) if isinstance(v, (list, tuple)) else v
            for k, v in ((k, pipe.transformer.config[k]) for k in want)}
    if have != want and grow is not None and _growable(have, want):
        from .toy_grow import grow_transformer

        pipe.transformer = grow_transformer(pipe.transformer, want["num_layers"], want["num_single_layers"],
                                            copy_heads=grow.copy_heads, seed=grow.seed)
    elif have != want:
        hint = "" if grow is not None else " (a `grow` section grows a smaller one)"
        raise ValueError(f"init_from {folder}: its transformer {have} is not the config's model {want}{hint}")
    if pipe.vae.config.sample_size != model_cfg.image_size:
        # progressive resolution (as FLUX and SD3 are trained): the same weights continue on a larger token
        # grid; the VAE is convolutional and RoPE positions simply extend
        pipe.vae.register_to_config(sample_size=model_cfg.image_size)
    return pipe


def _growable(have: dict[str, Any], want: dict[str, Any]) -> bool:
    """Only the block counts differ, and neither shrinks."""
    counts = ("num_layers", "num_single_layers")
    same = all(have[k] == want[k] for k in have if k not in counts)
    return same and all(want[k] >= have[k] for k in counts)


def start_from_pipeline(pipe: Any) -> dict[str, Any]:
    """The state of a fine-tuning run from a saved pipeline: transformer phase at step 0, the folder's VAE and
    its latent statistics as they are, and a log and wall time of its own."""
    vae = pipe.vae.config
    stats = {"shift_factor": float(vae.shift_factor), "scaling_factor": float(vae.scaling_factor)}
    return {"phase": "transformer", "step": 0, "log": [], "vae_stats": stats, "wall_s": 0.0}


def add_lora_from_config(pipe: Any, cfg: ToyTrainConfig) -> bool:
    """Add the config's LoRA adapter to the transformer (freezing its base weights); False when there is none."""
    if not cfg.lora_rank:
        return False
    from .lora import DEFAULT_TARGETS, add_lora

    # peft's random A matrices: seeded by the run's data seed, without touching the process' global generator
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.data.seed)
        add_lora(pipe.transformer, rank=cfg.lora_rank, alpha=cfg.lora_alpha,
                 targets=cfg.lora_targets or DEFAULT_TARGETS)
    return True
