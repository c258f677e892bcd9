"""`python -m jobs.train CONFIG --dry-run`: what a fine-tune will do and cost, without a model or Ray.

Memory per GPU is an estimate from the real architecture's parameter counts (the tiny and toy models are
costed as the real architecture `actors.models` prices them as, as the run's dry run does): weights (bf16 base for LoRA, fp32
master weights for full), the trainable parameters' gradients and AdamW moments (fp32), and activations
(~34 bytes per token, hidden unit and layer without checkpointing, Korthikanti et al. 2022; with gradient
checkpointing one bf16 layer input per layer plus one layer's activations). Encoders are counted while they
encode (once, at the start), not during training (`model.park_encoders`). FLOPs per step come from the FLOP
model of one transformer call (`costs.flops`), times 3 for full fine-tuning
(forward, and a backward of twice its cost), times 2 for LoRA (no weight gradients of the frozen base), plus
one forward with gradient checkpointing; the source tokens are costed at the drop range's mean kept share.
"""
from __future__ import annotations

from typing import Any

from actors.models import model
from costs import for_model, gpu_seconds
from costs.flops import call_flops

from .config import FinetuneConfig

GIB = 1024 ** 3
# LoRA-able linears of width hidden x hidden per block (DEFAULT_TARGETS): 8 in a dual-stream block (q, k, v, out
# of each stream), 3 in a Flux single-stream block (q, k, v)
LORA_LINEARS_DUAL, LORA_LINEARS_SINGLE = 8, 3


def _sizes(model_name: str) -> dict[str, float]:
    """What memory depends on, of the real architecture the model is priced as (`costs`)."""
    priced = for_model(model_name)
    arch = priced.arch
    return {"params": priced.architecture.params, "encoders": priced.architecture.encoder_params,
            "dim": arch.dim, "layers": arch.num_layers,
            "lora_linears": arch.dual_layers * LORA_LINEARS_DUAL + arch.single_layers * LORA_LINEARS_SINGLE}


def memory_gib(cfg: FinetuneConfig, tokens: int) -> dict[str, float]:
    """Estimated GiB per GPU while training and while encoding."""
    a = _sizes(cfg.model.name)
    workers = cfg.scaling.num_workers
    if cfg.lora is not None:
        trainable = cfg.lora.rank * 2 * a["dim"] * a["lora_linears"]
        weights = 2 * a["params"] + 4 * trainable
        state = 12 * trainable                         # gradient + two AdamW moments, fp32
    else:
        trainable = a["params"]
        shards = workers if cfg.scaling.strategy == "fsdp" else 1
        weights = 4 * a["params"] / shards + (2 * a["params"] / a["layers"] if shards > 1 else 0)
        state = 12 * a["params"] / shards
    per_layer = tokens * cfg.train.batch_size * a["dim"]
    acts = (2 * per_layer * a["layers"] + 34 * per_layer) if cfg.train.gradient_checkpointing \
        else 34 * per_layer * a["layers"]
    # while encoding, every worker holds the whole pipeline (FSDP shards the transformer only when it wraps it)
    loaded = (2 if cfg.lora is not None else 4) * (a["params"] + a["encoders"])
    return {"trainable_params_M": trainable / 1e6, "train_gib": (weights + state + acts) / GIB,
            "encode_gib": loaded / GIB}


def _references(cfg: FinetuneConfig, records: int | None) -> tuple[float, int | None]:
    """(mean images per record: the source and its further references, records) from the manifest."""
    from .data import read_triplets

    if records is not None:
        return 1.0, records
    try:
        rows = read_triplets(cfg.data.uri, cfg.data.storage or None)
    except Exception as exc:   # noqa: BLE001 - a plan without the count still helps
        print(f"(manifest not read: {exc})")
        return 1.0, None
    return sum(1 + len(r["references"]) for r in rows) / len(rows), len(rows)


def plan(cfg: FinetuneConfig, records: int | None = None) -> dict[str, Any]:
    """The plan as a dict (what `describe` prints)."""
    from .schedule import steps_per_epoch

    priced, size, t = for_model(cfg.model.name), cfg.data.size, cfg.train
    noisy = (size // 16) ** 2
    references, records = _references(cfg, records)
    prompt = priced.text(references=max(1, round(references)))[0]   # the conditional call's text tokens
    text = min(prompt, cfg.model.max_sequence_length or prompt)
    lo, hi = t.reference_drop or (0.0, 0.0)
    kept = noisy * references * (1 - (lo + hi) / 2)
    per_sample = noisy + kept + text
    batch = cfg.scaling.num_workers * t.batch_size * t.grad_accum
    out = {"model": cfg.model.name, "family": model(cfg.model.name).family.name, "mode": f"LoRA rank {cfg.lora.rank}" if cfg.lora else
           f"full ({cfg.scaling.strategy})", "workers": cfg.scaling.num_workers, "global_batch": batch,
           "image_tokens": noisy, "references": references, "text_tokens": text, "mean_kept_reference_tokens": kept,
           "tokens_per_step": int(batch * per_sample), "records": records,
           "steps_per_epoch": None if records is None else steps_per_epoch(records, cfg.scaling.num_workers,
                                                                        t.batch_size, t.grad_accum),
           **memory_gib(cfg, int(per_sample))}
    out["fits_gpu"] = max(out["train_gib"], out["encode_gib"]) <= cfg.scaling.gpu_memory_gib
    factor = (2 if cfg.lora is not None else 3) + (1 if t.gradient_checkpointing else 0)
    forward = call_flops(priced.arch, text, noisy, noisy * references, kept=int(round(kept))).total
    out["flops_per_step"] = factor * batch * forward
    return out


def describe(p: dict[str, Any]) -> str:
    lines = [f"fine-tune {p['model']} ({p['family']}), {p['mode']}, {p['workers']} worker(s), "
             f"global batch {p['global_batch']}",
             f"tokens per sample: {p['image_tokens']} noisy + {p['mean_kept_reference_tokens']:.0f} kept reference "
             f"(mean over the drop range, {p['references']:g} image(s) per record) + {p['text_tokens']} text; "
             f"tokens per step: {p['tokens_per_step']:,}",
             f"records: {p['records']}; steps per epoch: "
             + ("unknown" if p["steps_per_epoch"] is None else f"{p['steps_per_epoch']:.1f}"),
             f"trainable parameters: {p['trainable_params_M']:.1f} M; memory per GPU (estimate): "
             f"{p['train_gib']:.1f} GiB training, {p['encode_gib']:.1f} GiB while encoding"
             + ("" if p["fits_gpu"] else "  -- MORE than scaling.gpu_memory_gib")]
    one_gpu = gpu_seconds(p["flops_per_step"])
    lines.append(f"FLOPs per optimizer step (FLOP model of the real architecture): {p['flops_per_step']:.3g}: "
                 f"{one_gpu:.1f} GPU-seconds at 400 TFLOP/s sustained, {one_gpu / p['workers']:.1f} s per step "
                 f"on {p['workers']} GPU(s)")
    return "\n".join(lines)
