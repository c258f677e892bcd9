"""The toy model's card: evaluate the trained model on the held-out split, write `MODEL_CARD.md`.

Held-out split: `toy.data` seed 1 (training uses seed 0), N records, categories cycling. Every record is
edited with the `full` policy at 128x128 and scored against what is known exactly:
- `psnr_bg`: background PSNR vs the source, PIE-Bench's convention (`pipeline.metrics.background_metrics`:
  both images with the edited mask zeroed), the number `dropedit report` shows; undefined for edits whose
  mask is the whole image (grayscale, invert);
- `psnr_edit`: PSNR inside the mask vs the exact target (only the mask's pixels).
Two references put these in scale: the source itself as the "edit" (what doing nothing scores) and the
VAE round trip of the target (the best the latent space allows).

`make_card` writes `MODEL_CARD.md`, `loss.png` and `eval.json` into the model folder; `python -m jobs.toy_card`
is its command.
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "toy-flux-kontext"
HELD_OUT_SEED = 1


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def evaluate(pipe: Any, n: int, seed: int = HELD_OUT_SEED, steps: int = 28, policy: str = "full",
             edit_seed: int = 0, policy_params: dict[str, Any] | None = None,
             progress: bool = False) -> list[dict[str, Any]]:
    """One row per held-out record: the metrics above plus the references."""
    import torch
    from PIL import Image

    import policies
    from actors import Editor
    from actors import training as T
    from pipeline.metrics import background_metrics, psnr
    from toy.data import make_record

    size = int(pipe.vae.config.sample_size)
    editor = Editor(pipe, policies.make(policy, **(policy_params or {})))
    rows = []
    for i in range(n):
        rec = make_record(seed, i, size)
        result = editor.edit(Image.fromarray(rec.source), rec.instruction, seed=edit_seed, steps=steps,
                             height=size, width=size)
        edited = np.asarray(result.image)
        with torch.no_grad():
            pixels = T.to_pixels(np.stack([rec.source, rec.target])).to(pipe.vae.device, pipe.vae.dtype)
            z = pipe.vae.encode(pixels).latent_dist.mode()
            recon = T.to_uint8(pipe.vae.decode(z, return_dict=False)[0])
        rows.append({
            "id": rec.id, "category": rec.category, "instruction": rec.instruction,
            "mask_fraction": float(rec.mask.mean()),
            "psnr_bg": background_metrics(edited, rec.source, rec.mask)["psnr_bg"],
            "psnr_edit": psnr(edited, rec.target, rec.mask),
            "psnr_target": psnr(edited, rec.target),
            "source_psnr_edit": psnr(rec.source, rec.target, rec.mask),
            "vae_psnr_source": psnr(recon[0], rec.source),
            "vae_psnr_edit": psnr(recon[1], rec.target, rec.mask),
            "keep_ratio_mean": result.keep_ratio_mean, "seconds": result.seconds,
        })
        if progress:
            r = rows[-1]
            print(f"[{i + 1}/{n}] {rec.category:10s} edit {r['psnr_edit']:.2f} dB (source {r['source_psnr_edit']:.2f})"
                  f"  {rec.instruction}", file=sys.stderr, flush=True)
    return rows


def by_category(rows: list[dict[str, Any]], keys: Iterable[str]) -> dict[str, dict[str, float | None]]:
    """Mean of each key per category (PSNR averaged in dB, as PIE-Bench averages), plus 'all'."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["category"]].append(r)
    groups["all"] = list(rows)
    keys = list(keys)
    return {cat: {"n": len(rs), **{k: _mean(r[k] for r in rs) for k in keys}} for cat, rs in groups.items()}


def plot_loss(log: list[dict[str, Any]], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vae = [r for r in log if r["phase"] == "vae"]
    dit = [r for r in log if r["phase"] == "transformer"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot([r["step"] for r in vae], [r["val"] for r in vae], color="tab:green")
    a.set(title="VAE: validation reconstruction PSNR", xlabel="step", ylabel="dB")
    a.grid(alpha=0.3)
    b.plot([r["step"] for r in dit], [r["loss"] for r in dit], label="train (mean over report window)", alpha=0.8)
    b.plot([r["step"] for r in dit], [r["val"] for r in dit], label="validation (fixed batch, σ, noise)")
    b.set(title="Transformer: flow-matching loss", xlabel="step", ylabel="MSE", yscale="log")
    b.grid(alpha=0.3, which="both")
    b.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _params(module: Any) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f} M"


def write_card(model_dir: Path, pipe: Any, summary: dict[str, Any], table: dict[str, dict[str, Any]],
               n: int, steps: int, eval_seconds: float, note: str = "") -> str:
    """`model_dir/MODEL_CARD.md` from the training summary (`loss.json`) and the evaluation table; returns it."""
    from toy.model import ToyModelConfig

    mc = ToyModelConfig.from_mapping(summary["model_config"]).to_dict()   # the defaults the config left out
    vae_rows = [r for r in summary["log"] if r["phase"] == "vae"]
    lines = [
        "# toy-flux-kontext",
        "",
        "A small instruction-editing model that really edits, of the very classes of FLUX.1-Kontext-dev, trained on a "
        "procedural task whose right answer is known exactly, so that quality numbers on a CPU mean something. "
        "Load it with `actors.load_pipeline(\"toy-flux-kontext\")` (this folder, nothing downloaded) or "
        "`FluxKontextPipeline.from_pretrained(\"models/toy-flux-kontext\")`. It edits 128x128 images.",
        "",
        "This card is written by `python -m jobs.toy_card` (`toy/card.py`) from `loss.json` (the training log) and "
        "a fresh evaluation: every number below is measured.",
        "",
        *_model_section(pipe, mc),
        *_data_section(summary["train_config"]),
        *_training_section(summary, mc, note),
        *_quality_section(table, n, steps, eval_seconds, vae_rows),
        *LIMITS,
    ]
    text = "\n".join(lines)
    (model_dir / "MODEL_CARD.md").write_text(text)
    return text


def _model_section(pipe: Any, mc: dict[str, Any]) -> list[str]:
    return [
        "## Model",
        "",
        "| component | class | size |",
        "|---|---|---|",
        f"| transformer | `FluxTransformer2DModel`: {mc['num_layers']} dual + {mc['num_single_layers']} single blocks, "
        f"{mc['num_attention_heads']} heads x {mc['attention_head_dim']}, RoPE axes {list(mc['axes_dims_rope'])}, "
        f"no guidance embedding | {_params(pipe.transformer)} |",
        f"| VAE | `AutoencoderKL`: channels {list(mc['vae_channels'])}, 8x down-sampling, 16 latent channels, "
        f"shift {pipe.vae.config.shift_factor:.4f}, scale {pipe.vae.config.scaling_factor:.4f} | {_params(pipe.vae)} |",
        f"| text encoders | `CLIPTextModel` + `T5EncoderModel`, {mc['text_layers']} layer, width 32, "
        f"frozen at their seeded random weights | {_params(pipe.text_encoder)} + {_params(pipe.text_encoder_2)} |",
        f"| tokenizers | `CLIPTokenizer`, `T5Tokenizer` built locally (`actors.tiny_tokenizers`), the toy vocabulary "
        f"as whole words | {len(pipe.tokenizer)} / {len(pipe.tokenizer_2)} tokens |",
        "| scheduler | `FlowMatchEulerDiscreteScheduler`, the real Kontext config (dynamic shift) | – |",
        "",
        "128 px images give an 8x8 grid of 64 tokens per image; with the toy's 32-token T5 context (the "
        "tokenizer's `model_max_length`; our adapter pads prompts to it, diffusers' own `__call__` needs "
        "`max_sequence_length=32`) the transformer sees 32 + 64 + 64 = 160 tokens per step.",
        "",
    ]


def _data_section(train: dict[str, Any]) -> list[str]:
    from toy.data import CATEGORIES

    records_seen = (int(train["vae"]["steps"]) * int(train["vae"]["batch_size"])
                    + int(train["transformer"]["steps"]) * int(train["transformer"]["batch_size"]))
    return [
        "## Data",
        "",
        "`toy.data` (`python -m jobs.make_toy_data`): smooth backgrounds (flat, linear and radial gradients, "
        "low-frequency value noise, wide stripes and checks) with 1-3 shapes (circle, square, triangle, diamond; "
        "8 named colours; 3 named sizes). Instructions from templates; the target is a function of source and "
        f"instruction alone. Categories (cycling): {', '.join(CATEGORIES)}. Training draws fresh records of seed "
        f"{train['data']['seed']} at every step ({records_seen:,} records in all, none repeated); the held-out split "
        f"is seed {HELD_OUT_SEED}.",
        "",
    ]


def _training_section(summary: dict[str, Any], mc: dict[str, Any], note: str) -> list[str]:
    train = summary["train_config"]
    vae_rows = [r for r in summary["log"] if r["phase"] == "vae"]
    dit_rows = [r for r in summary["log"] if r["phase"] == "transformer"]
    vae_wall = vae_rows[-1]["wall_s"] if vae_rows else 0.0
    n_workers = int(train["scaling"]["num_workers"])
    return [
        "## Training",
        "",
        f"`python -m jobs.train configs/train_toy.yaml` (Ray Train `TorchTrainer`, {n_workers} CPU worker, "
        f"{train['threads']} torch thread, on a shared 2-core machine):",
        f"1. VAE: {train['vae']['steps']} steps, batch {train['vae']['batch_size']} random "
        f"{train['vae'].get('crop', mc['image_size'])} px crops, AdamW lr {train['vae']['lr']}, L1 + MSE + 1e-6 KL; "
        f"{vae_wall / 60:.1f} min.",
        f"2. Transformer: {train['transformer']['steps']} steps, batch {train['transformer']['batch_size']}, AdamW lr "
        f"{train['transformer']['lr']} (warm-up {train['transformer']['warmup']}, cosine to 10%), conditional flow "
        "matching z_t = (1-σ)·z_tgt + σ·ε, target ε - z_tgt, σ logit-normal through the scheduler's shift; "
        f"{(summary['wall_s'] - vae_wall) / 60:.1f} min.",
        "",
        f"Total training wall time: **{summary['wall_s'] / 60:.1f} min**. Final losses: VAE validation PSNR "
        f"{_fmt(vae_rows[-1]['val'] if vae_rows else None)} dB; transformer train {_fmt(dit_rows[-1]['loss'] if dit_rows else None, 4)}, "
        f"validation {_fmt(dit_rows[-1]['val'] if dit_rows else None, 4)}.",
        "",
        *([note, ""] if note else []),
        "![loss curves](loss.png)",
        "",
        "The validation loss is taken at fixed σ spread evenly over [0.1, 0.9], training σ are logit-normal: the "
        "two curves differ in where they weigh the noise levels, not by over-fitting (no record is seen twice).",
        "",
    ]


def _quality_section(table: dict[str, dict[str, Any]], n: int, steps: int, eval_seconds: float,
                     vae_rows: list[dict[str, Any]]) -> list[str]:
    from toy.data import CATEGORIES

    lines = [
        "## Quality on the held-out split (`full` policy)",
        "",
        f"{n} records of seed {HELD_OUT_SEED}, {steps} steps, 128x128, edit seed 0 ({eval_seconds / 60:.1f} min). "
        "PSNR in dB, averaged per category. `bg`: background vs the source (PIE-Bench convention). `edit`: inside "
        "the mask vs the exact target; `no-op`: the same for the unedited source; `VAE`: the same for the VAE round "
        "trip of the target (the ceiling of any edit in this latent space).",
        "",
        "| category | n | bg PSNR | edit PSNR | edit PSNR, no-op | edit PSNR, VAE | VAE PSNR (source) |",
        "|---|---|---|---|---|---|---|",
    ]
    for cat in [*CATEGORIES, "all"]:
        if cat in table:
            t = table[cat]
            lines.append(f"| {cat} | {t['n']} | {_fmt(t['psnr_bg'])} | {_fmt(t['psnr_edit'])} | "
                         f"{_fmt(t['source_psnr_edit'])} | {_fmt(t['vae_psnr_edit'])} | {_fmt(t['vae_psnr_source'])} |")
    gains = {c: table[c]["psnr_edit"] - table[c]["source_psnr_edit"] for c in CATEGORIES
             if c in table and table[c]["psnr_edit"] is not None and table[c]["source_psnr_edit"] is not None}
    clear = [f"{c} (+{g:.1f})" for c, g in gains.items() if g >= 3]
    weak = [f"{c} ({g:+.1f})" for c, g in gains.items() if g < 2]
    return lines + [
        "",
        f"VAE reconstruction PSNR on the held-out sources: **{_fmt(table['all']['vae_psnr_source'])} dB** "
        f"(its own validation images at the end of training: {_fmt(vae_rows[-1]['val'] if vae_rows else None)} dB).",
        "",
        f"Edit PSNR over the no-op, in dB: clear gains (≥ 3 dB) for {', '.join(clear) or 'none'}; "
        f"little or none (< 2 dB) for {', '.join(weak) or 'none'}.",
        "",
    ]


LIMITS = [
    "## Limits",
    "",
    "- 128x128 only (other sizes are out of distribution); one procedural domain.",
    "- The text encoders are random and frozen; the transformer learned to read their token features.",
    "- Not guidance-distilled: `guidance_scale` has no effect.",
    "- The VAE bounds every PSNR: see its column.",
    "",
    "Reproduce: `python -m jobs.train configs/train_toy.yaml && python -m jobs.toy_card`.",
    "",
]


KEYS = ("psnr_bg", "psnr_edit", "psnr_target", "source_psnr_edit", "vae_psnr_source", "vae_psnr_edit",
        "mask_fraction")


def make_card(model_dir: Path, n: int = 80, seed: int = HELD_OUT_SEED, steps: int = 28, threads: int = 1,
              reuse_eval: bool = False, note: str = "") -> dict[str, Any]:
    """Evaluate the trained model in `model_dir` (or take the rows of its eval.json with the same n, seed and
    steps when `reuse_eval`), then write `loss.png`, `eval.json` and `MODEL_CARD.md` there. Returns the card's
    path and the overall means."""
    import torch

    from actors import load_pipeline

    torch.set_num_threads(threads)
    model_dir = Path(model_dir)
    summary = json.loads((model_dir / "loss.json").read_text())
    pipe = load_pipeline("toy-flux-kontext", path=model_dir, device="cpu")
    saved = json.loads((model_dir / "eval.json").read_text()) if (model_dir / "eval.json").exists() else {}
    if reuse_eval and [saved.get(k) for k in ("n", "seed", "steps")] == [n, seed, steps]:
        rows, seconds = saved["rows"], saved["seconds"]
    else:
        started = time.perf_counter()
        rows = evaluate(pipe, n, seed=seed, steps=steps, progress=True)
        seconds = time.perf_counter() - started
    table = by_category(rows, KEYS)
    plot_loss(summary["log"], model_dir / "loss.png")
    (model_dir / "eval.json").write_text(json.dumps({"n": n, "seed": seed, "steps": steps,
                                                     "seconds": seconds, "by_category": table, "rows": rows},
                                                    indent=1))
    write_card(model_dir, pipe, summary, table, n, steps, seconds, note=note)
    return {"card": str(model_dir / "MODEL_CARD.md"), "all": table["all"]}
