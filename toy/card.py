"""The toy model's card: evaluate the trained model on the held-out split, write `MODEL_CARD.md`.

Held-out split: `toy.data` seed 1 (training uses seed 0), N records, categories cycling. Every record is
edited with the `full` policy at 128x128 and scored against what is known exactly:
- `psnr_bg`: background PSNR vs the source, PIE-Bench's convention (`metrics.pixel.background_metrics`:
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
from typing import Any, Callable, Iterable

import numpy as np

from core.resources import resource

DEFAULT_MODEL = resource("models", "toy-flux-kontext")
HELD_OUT_SEED = 1
# (source, instruction, size) -> (edited H x W x 3 uint8, keep ratio or None, seconds): one held-out edit
Sampler = Callable[[Any, str, int], "tuple[np.ndarray, float | None, float]"]


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def evaluate(pipe: Any, n: int, seed: int = HELD_OUT_SEED, steps: int = 28, policy: str = "full",
             edit_seed: int = 0, policy_params: dict[str, Any] | None = None,
             progress: bool = False, sample: Sampler | None = None) -> list[dict[str, Any]]:
    """One row per held-out record: the metrics above plus the references. `sample(source, instruction, size)`
    -> (edited pixels, keep ratio, seconds) replaces our editor with `policy` (e.g. diffusers' own call)."""
    import torch
    from PIL import Image

    import policies
    from actors import Editor
    from metrics.pixel import background_metrics, psnr
    from toy.data import make_record
    from toy.vae import to_pixels, to_uint8

    size = int(pipe.vae.config.sample_size)
    if sample is None:
        editor = Editor(pipe, policies.make(policy, **(policy_params or {})))

        def sample(source: Any, instruction: str, size: int) -> tuple[np.ndarray, float | None, float]:
            result = editor.edit(source, instruction, seed=edit_seed, steps=steps, height=size, width=size)
            return np.asarray(result.image), result.keep_ratio_mean, result.seconds
    rows = []
    for i in range(n):
        rec = make_record(seed, i, size)
        edited, keep_ratio, seconds = sample(Image.fromarray(rec.source), rec.instruction, size)
        with torch.no_grad():
            pixels = to_pixels(np.stack([rec.source, rec.target])).to(pipe.vae.device, pipe.vae.dtype)
            z = pipe.vae.encode(pixels).latent_dist.mode()
            recon = to_uint8(pipe.vae.decode(z, return_dict=False)[0])
        rows.append({
            "id": rec.id, "category": rec.category, "instruction": rec.instruction,
            "mask_fraction": float(rec.mask.mean()),
            "psnr_bg": background_metrics(edited, rec.source, rec.mask)["psnr_bg"],
            "psnr_edit": psnr(edited, rec.target, rec.mask),
            "psnr_target": psnr(edited, rec.target),
            "source_psnr_edit": psnr(rec.source, rec.target, rec.mask),
            "vae_psnr_source": psnr(recon[0], rec.source),
            "vae_psnr_edit": psnr(recon[1], rec.target, rec.mask),
            "keep_ratio_mean": keep_ratio, "seconds": seconds,
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


TRAIN_CONFIGS = {"toy-flux-kontext": "configs/train_toy.yaml", "toy-flux-kontext-v2": "configs/train_toy_v2.yaml",
                 "toy-flux-kontext-v3": "configs/train_toy_v3.yaml",
                 "toy-flux-kontext-v4": "configs/train_toy_v4.yaml"}


def _load_name(summary: dict[str, Any]) -> str:
    return summary.get("load", {}).get("name", "toy-flux-kontext")   # v1's loss.json predates the entry


def _grid(size: int) -> int:
    return size // 16   # 8x VAE, 2x2 packing: 16 px per token


def write_card(model_dir: Path, pipe: Any, summary: dict[str, Any], table: dict[str, dict[str, Any]],
               n: int, steps: int, eval_seconds: float, note: str = "") -> str:
    """`model_dir/MODEL_CARD.md` from the training summary (`loss.json`), the evaluation table and, when the
    folder has one, `recipe.md` (what was tried on the way); returns the card."""
    from toy.model import ToyModelConfig

    mc = ToyModelConfig.from_mapping(summary["model_config"]).to_dict()   # the defaults the config left out
    vae_rows = [r for r in summary["log"] if r["phase"] == "vae"]
    name, size = model_dir.name, int(mc["image_size"])
    recipe = model_dir / "recipe.md"
    lines = [
        f"# {name}",
        "",
        "A small instruction-editing model that really edits, of the very classes of FLUX.1-Kontext-dev, trained on a "
        "procedural task whose right answer is known exactly, so that quality numbers on a CPU mean something. "
        f"Load it with `actors.load_pipeline(\"{_load_name(summary)}\")` (this folder, nothing downloaded) or "
        f"`FluxKontextPipeline.from_pretrained(\"models/{name}\")`. It edits {size}x{size} images.",
        "",
        "This card is written by `python -m jobs.toy_card` (`toy/card.py`) from `loss.json` (the training log) and "
        "a fresh evaluation: every number below is measured.",
        "",
        *_model_section(pipe, mc),
        *_data_section(summary["train_config"], summary["log"]),
        *_training_section(summary, mc, note, TRAIN_CONFIGS.get(name, "CONFIG")),
        *_quality_section(table, n, steps, eval_seconds, vae_rows, size),
        *([recipe.read_text().rstrip(), ""] if recipe.is_file() else []),
        *_limits(size, TRAIN_CONFIGS.get(name, "CONFIG"), name, prior=bool(_prediction_row(pipe))),
    ]
    text = "\n".join(lines)
    (model_dir / "MODEL_CARD.md").write_text(text)
    return text


def _model_section(pipe: Any, mc: dict[str, Any]) -> list[str]:
    size = int(mc["image_size"])
    g = _grid(size)
    return [
        "## Model",
        "",
        "| component | class | size |",
        "|---|---|---|",
        f"| transformer | `FluxTransformer2DModel`: {mc['num_layers']} dual + {mc['num_single_layers']} single blocks, "
        f"{mc['num_attention_heads']} heads x {mc['attention_head_dim']}, RoPE axes {list(mc['axes_dims_rope'])}, "
        f"no guidance embedding | {_params(pipe.transformer)} |",
        *_prediction_row(pipe),
        f"| VAE | `AutoencoderKL`: channels {list(mc['vae_channels'])}, 8x down-sampling, 16 latent channels, "
        f"shift {pipe.vae.config.shift_factor:.4f}, scale {pipe.vae.config.scaling_factor:.4f} | {_params(pipe.vae)} |",
        f"| text encoders | `CLIPTextModel` + `T5EncoderModel`, {mc['text_layers']} layer, width 32, "
        f"frozen at their seeded random weights{_order_note(pipe)} | {_params(pipe.text_encoder)} + "
        f"{_params(pipe.text_encoder_2)} |",
        f"| tokenizers | `CLIPTokenizer`, `T5Tokenizer` built locally (`actors.tiny_tokenizers`), the toy vocabulary "
        f"as whole words | {len(pipe.tokenizer)} / {len(pipe.tokenizer_2)} tokens |",
        "| scheduler | `FlowMatchEulerDiscreteScheduler`, the real Kontext config (dynamic shift) | – |",
        "",
        f"{size} px images give a grid of {g}x{g} = {g * g} tokens per image (16 px per token, as FLUX.1-Kontext-dev "
        f"at 1024²; one token is {100 / (g * g):.1f}% of the image); with the toy's 32-token T5 context (the "
        "tokenizer's `model_max_length`; our adapter pads prompts to it, diffusers' own `__call__` needs "
        f"`max_sequence_length=32`) the transformer sees 32 + {g * g} + {g * g} = {32 + 2 * g * g} tokens per step.",
        "",
    ]


def _order_note(pipe: Any) -> str:
    from toy.text_order import text_order_of

    strength = text_order_of(pipe.text_encoder_2)
    return "" if strength is None else (
        f"; the T5's relative-position biases set so that one head reads the previous word and one the next "
        f"(bias {strength:g}, `toy.text_order`): FLUX's text attention sees the tokens as a set, so word order "
        "must be inside each token's vector")


def _data_section(train: dict[str, Any], log: list[dict[str, Any]]) -> list[str]:
    from toy.data import CATEGORIES

    phases = {r["phase"] for r in log}
    records_seen = sum(int(train[p]["steps"]) * int(train[p]["batch_size"]) for p in ("vae", "transformer")
                       if p in phases)
    mix = train["data"].get("categories")
    mix_text = f"Training mix (cycled): {', '.join(mix)}." if mix else "Training cycles through them in turn."
    return [
        "## Data",
        "",
        "`toy.data` (`python -m jobs.make_toy_data`): smooth backgrounds (flat, linear and radial gradients, "
        "low-frequency value noise, wide stripes and checks) with 1-3 shapes (circle, square, triangle, diamond; "
        "8 named colours; 3 named sizes). Instructions from templates; the target is a function of source and "
        f"instruction alone. Categories: {', '.join(CATEGORIES)}. {mix_text} Training draws fresh records of seed "
        f"{train['data']['seed']} at every step ({records_seen:,} records in this run, none repeated); the held-out "
        f"split is seed {HELD_OUT_SEED} (the categories in turn).",
        "",
    ]


def _training_section(summary: dict[str, Any], mc: dict[str, Any], note: str, config: str) -> list[str]:
    train = summary["train_config"]
    vae_rows = [r for r in summary["log"] if r["phase"] == "vae"]
    dit_rows = [r for r in summary["log"] if r["phase"] == "transformer"]
    vae_wall = vae_rows[-1]["wall_s"] if vae_rows else 0.0
    tc, n_workers = train["transformer"], int(train["scaling"]["num_workers"])
    extras = []
    if tc.get("edit_weight"):
        extras.append(f"edit-weighted loss w = {tc['edit_weight']} (`finetune.flow_matching.changed_tokens`)")
    if tc.get("sigma_logit_mean"):
        extras.append(f"σ's logit-normal location m = {tc['sigma_logit_mean']} (nearer noise)")
    steps = [f"VAE: {train['vae']['steps']} steps, batch {train['vae']['batch_size']} random "
             f"{train['vae'].get('crop', mc['image_size'])} px crops, AdamW lr {train['vae']['lr']}, L1 + MSE + "
             f"1e-6 KL; {vae_wall / 60:.1f} min."] if vae_rows else [
             f"Start: `{train['init_from']}` (its VAE as is, its transformer trained on: progressive resolution)."]
    steps.append(
        f"Transformer: {tc['steps']} steps, batch {tc['batch_size']}, AdamW lr {tc['lr']} (warm-up {tc['warmup']}, "
        "cosine to 10%), conditional flow matching z_t = (1-σ)·z_tgt + σ·ε, target ε - z_tgt, σ logit-normal "
        f"through the scheduler's shift{'; ' + ', '.join(extras) if extras else ''}; "
        f"{(summary['wall_s'] - vae_wall) / 60:.1f} min.")
    return [
        "## Training",
        "",
        f"`python -m jobs.train {config}` (Ray Train `TorchTrainer`, {n_workers} CPU worker, "
        f"{train['threads']} torch thread(s), on a shared 2-core machine):",
        *[f"{i}. {text}" for i, text in enumerate(steps, 1)],
        "",
        f"Training wall time of this run: **{summary['wall_s'] / 60:.1f} min**. Final losses: "
        + (f"VAE validation PSNR {_fmt(vae_rows[-1]['val'])} dB; " if vae_rows else "")
        + f"transformer train {_fmt(dit_rows[-1]['loss'] if dit_rows else None, 4)}, "
        f"validation {_fmt(dit_rows[-1]['val'] if dit_rows else None, 4)}.",
        "",
        *([note, ""] if note else []),
        "![loss curves](loss.png)",
        "",
        "The validation loss is taken at fixed σ spread evenly over [0.1, 0.9] on a fixed batch (the plain mean "
        "over tokens), training σ are logit-normal (and, with an edit weight, the loss is the weighted mean): the "
        "two curves differ in what they weigh, not by over-fitting (no record is seen twice).",
        "",
    ]


# the bars for a toy that really edits: gain over the no-op inside the mask, and the background
BARS = {"local_gain_db": 5.0, "global_gain_db": 8.0, "bg_below_vae_db": 2.0}


def quality_bars(table: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per category: the edit's gain over the no-op against its bar, and (where a background exists) the
    background's distance to the VAE's reconstruction ceiling; each with `ok`."""
    from toy.data import CATEGORIES, LOCAL_EDITS

    out = []
    for cat in CATEGORIES:
        t = table.get(cat)
        if not t or t["psnr_edit"] is None or t["source_psnr_edit"] is None:
            continue
        bar = BARS["local_gain_db"] if cat in LOCAL_EDITS else BARS["global_gain_db"]
        gain = t["psnr_edit"] - t["source_psnr_edit"]
        bg_gap = None if t["psnr_bg"] is None else t["vae_psnr_source"] - t["psnr_bg"]
        out.append({"category": cat, "gain": gain, "bar": bar, "bg_gap": bg_gap,
                    "ok": gain >= bar and (bg_gap is None or bg_gap <= BARS["bg_below_vae_db"])})
    return out


def _bars_lines(table: dict[str, dict[str, Any]]) -> list[str]:
    rows = quality_bars(table)
    met = [r["category"] for r in rows if r["ok"]]
    lines = ["Quality bars (a toy that really edits): edit PSNR over the no-op ≥ +5 dB for each local category and "
             "≥ +8 dB for each global one; background PSNR within 2 dB of the VAE's reconstruction PSNR.", "",
             "| category | gain over no-op | bar | bg below VAE ceiling | met |", "|---|---|---|---|---|"]
    for r in rows:
        gap = "–" if r["bg_gap"] is None else f"{r['bg_gap']:.2f}"
        lines.append(f"| {r['category']} | {r['gain']:+.2f} | +{r['bar']:.0f} | {gap} | {'yes' if r['ok'] else '**no**'} |")
    return lines + ["", f"Met for {len(met)} of {len(rows)} categories.", ""]


def _quality_section(table: dict[str, dict[str, Any]], n: int, steps: int, eval_seconds: float,
                     vae_rows: list[dict[str, Any]], size: int) -> list[str]:
    from toy.data import CATEGORIES

    lines = [
        "## Quality on the held-out split (`full` policy)",
        "",
        f"{n} records of seed {HELD_OUT_SEED}, {steps} steps, {size}x{size}, edit seed 0 ({eval_seconds / 60:.1f} "
        "min). PSNR in dB, averaged per category. `bg`: background vs the source (PIE-Bench convention). `edit`: "
        "inside the mask vs the exact target; `no-op`: the same for the unedited source; `VAE`: the same for the VAE "
        "round trip of the target (the ceiling of any edit in this latent space).",
        "",
        "| category | n | bg PSNR | edit PSNR | edit PSNR, no-op | edit PSNR, VAE | VAE PSNR (source) |",
        "|---|---|---|---|---|---|---|",
    ]
    for cat in [*CATEGORIES, "all"]:
        if cat in table:
            t = table[cat]
            lines.append(f"| {cat} | {t['n']} | {_fmt(t['psnr_bg'])} | {_fmt(t['psnr_edit'])} | "
                         f"{_fmt(t['source_psnr_edit'])} | {_fmt(t['vae_psnr_edit'])} | {_fmt(t['vae_psnr_source'])} |")
    vae_val = f" (its own validation images at the end of training: {_fmt(vae_rows[-1]['val'])} dB)" if vae_rows else ""
    return lines + [
        "",
        f"VAE reconstruction PSNR on the held-out sources: **{_fmt(table['all']['vae_psnr_source'])} dB**{vae_val}.",
        "",
        *_bars_lines(table),
    ]


def _prediction_row(pipe: Any) -> list[str]:
    from actors.reference_residual import is_reference_residual

    if not is_reference_residual(pipe.transformer):
        return []
    return ["| prediction | x0 minus the reference at the same position (`dropedit.json`: `prediction: "
            "reference_residual`, `actors/reference_residual.py`): v = (z − x_ref − r) / σ, so r = 0 copies the "
            "source | – |"]


def _limits(size: int, config: str, name: str, prior: bool = False) -> list[str]:
    caveat = ["- The copy prior is structural: a token whose output r is zero keeps the source whatever the "
              "transformer computed elsewhere, and it needs no reference token in the call to do so. A policy "
              "that drops reference tokens or skips background work is therefore judged more kindly here than "
              "on a real model, whose copying lives in its attention; judge accelerators on the edit (inside "
              "the mask) first."] if prior else []
    return [
        "## Limits",
        "",
        f"- {size}x{size} only (other sizes are out of distribution); one procedural domain.",
        *caveat,
        "- The text encoders are random and frozen; the transformer learned to read their token features.",
        "- Not guidance-distilled: `guidance_scale` has no effect.",
        "- The VAE bounds every PSNR: see its column.",
        "",
        f"Reproduce: `python -m jobs.train {config} && python -m jobs.toy_card --model models/{name}`.",
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
    pipe = load_pipeline(_load_name(summary), path=model_dir, device="cpu")
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
