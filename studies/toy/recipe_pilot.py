"""A recipe pilot: continue a trained toy model for a few hundred steps with one option changed, then score it
on the held-out split per category (`python -m studies.toy.recipe_pilot --edit-weight 8 --steps 300`).

Cheap evidence for a choice in a long run's recipe (v2's model card quotes two of these): in-process, one
torch thread, fixed data (by default seed 0 records from index 5,000,000, unseen by v1; `--data-seed` and
`--data-start` pick another range) and a fixed noise stream per step, so that two pilots differ only in the
option. Options of issue 29's pilots: `--grow L,S` (a deeper transformer grown function-preservingly,
`finetune.toy_grow`), `--copy-heads` (its new dual blocks start as copy heads), `--train-text-encoders` (the
CLIP and T5 encoders train with the transformer). With `--out`, a pilot whose result JSON exists is skipped
(a batch re-run resumes).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DATA_START = 5_000_000   # record indices of seed 0 that v1's training never reached
VAL_SEED, VAL_N = 999, 16   # the toy runs' validation batch (configs/train_toy*.yaml: data.val_seed, val_n)
V2_MIX = ("recolor", "remove", "add", "move", "resize", "recolor", "add", "move", "grayscale", "invert",
          "background")   # v2's training mix (configs/train_toy_v2.yaml: data.categories)


def pilot(model: str, edit_weight: float, steps: int, size: int, lr: float = 2e-4, batch: int = 16,
          n_eval: int = 80, eval_steps: int = 28, warmup: int = 20, data_seed: int = 0,
          data_start: int = DATA_START, categories: Sequence[str] | None = None,
          grow: tuple[int, int] | None = None, copy_heads: bool = False, train_text_encoders: bool = False,
          val_n: int = 0, save: str | None = None, cache: str | None = None, open_gate: float = 0.0,
          reference_residual: bool = False, residual_flow: bool = False, copy_dropout: float = 0.0,
          sigma_mean: float = 0.0, ordered_text: float = 0.0, pool: int = 0,
          score_seed: int | None = None) -> dict[str, Any]:
    """Train `steps` more steps from the shipped `model` at `size`, evaluate `n_eval` held-out records.
    `pool` N > 0: the steps cycle over N records from `data_start` (a memorisation test; N a multiple of `batch`);
    `score_seed`: score records 0.. of that seed instead of the held-out split (with `pool`, the pool itself)."""
    import torch

    import actors

    pipe = actors.load_pipeline(model, device="cpu", dtype=torch.float32)
    pipe.vae.register_to_config(sample_size=size)
    params = prepare(pipe, grow, copy_heads, train_text_encoders, open_gate, reference_residual, residual_flow,
                     ordered_text)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    load, data_s, step_s, losses = [], [], [], []
    started = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / max(1, warmup))   # a short warm-up: the optimizer is fresh
        offset = (step * batch) % pool if pool else step * batch
        loss, d, s = train_step(pipe, optimizer, params, data_seed, data_start + offset, batch, size,
                                categories, torch.Generator().manual_seed(1000 + step), edit_weight,
                                train_text_encoders, cache, copy_dropout, sigma_mean)
        losses.append(loss)
        data_s.append(d)
        step_s.append(s)
        if step % 10 == 0:
            load.append(os.getloadavg()[0])
            print(f"[{step + 1}/{steps}] loss {loss:.4f} data {d:.2f} s step {s:.2f} s load {load[-1]:.2f}",
                  flush=True)
    train_s = time.perf_counter() - started
    result = {"model": model, "edit_weight": edit_weight, "steps": steps, "size": size, "lr": lr,
              "train_s": round(train_s, 1), "final_loss": float(np.mean(losses[-50:])) if losses else None,
              **score(pipe, n_eval, eval_steps, score_seed)}
    result["options"] = {"batch": batch, "warmup": warmup, "data_seed": data_seed, "data_start": data_start,
                         "categories": list(categories or []), "grow": list(grow) if grow else None,
                         "copy_heads": copy_heads, "open_gate": open_gate,
                         "reference_residual": reference_residual, "residual_flow": residual_flow,
                         "copy_dropout": copy_dropout, "sigma_logit_mean": sigma_mean,
                         "ordered_text": ordered_text, "pool": pool, "score_seed": score_seed,
                         "train_text_encoders": train_text_encoders,
                         "threads": torch.get_num_threads(), "latent_cache": bool(cache)}
    result["timing"] = timing(data_s, step_s, load)
    result["val"] = val_losses(pipe, val_n, size) if val_n else None
    result["transformer_params"] = sum(p.numel() for p in pipe.transformer.parameters())
    if save:
        save_pipeline(pipe, model, save)
    return result


def prepare(pipe: Any, grow: tuple[int, int] | None, copy_heads: bool, train_text_encoders: bool,
            open_gate: float = 0.0, reference_residual: bool = False, residual_flow: bool = False,
            ordered_text: float = 0.0) -> list[Any]:
    """Apply the pilot's model options; return the parameters to train."""
    if ordered_text:
        from toy.text_order import order_text_encoder

        order_text_encoder(pipe.text_encoder_2, ordered_text)
    if reference_residual or residual_flow:
        from finetune.toy_copy_prior import start_reference_residual

        start_reference_residual(pipe.transformer, residual_input=residual_flow)
    if copy_heads and not grow:
        raise ValueError("--copy-heads initialises the new blocks of --grow: give --grow too")
    if grow:
        from finetune.toy_grow import grow_transformer

        pipe.transformer = grow_transformer(pipe.transformer, grow[0], grow[1], copy_heads=copy_heads,
                                            open_gate=open_gate)
    params = list(pipe.transformer.parameters())
    if train_text_encoders:
        for enc in (pipe.text_encoder, pipe.text_encoder_2):
            enc.requires_grad_(True)
            params += list(enc.parameters())
    return params


def train_step(pipe: Any, optimizer: Any, params: list[Any], seed: int, start: int, batch: int, size: int,
               categories: Sequence[str] | None, gen: Any, edit_weight: float, train_text: bool,
               cache: str | None = None, copy_dropout: float = 0.0, sigma_mean: float = 0.0
               ) -> tuple[float, float, float]:
    """One step on records start..start+batch of `seed`: (loss, seconds making and encoding the data,
    seconds of the step itself). Frozen text: `finetune.flow_matching.transformer_step` on the encoded batch;
    trainable text: the same draws and loss with the prompts encoded inside the step, with gradient.
    `copy_dropout` p: each record's instruction is dropped with probability p and its target becomes its
    source, so that "no instruction" means "copy" (what true CFG's negative branch then predicts). `sigma_mean`:
    the logit-normal location of the training σ (SD3's m; > 0 trains nearer noise)."""
    from finetune.flow_matching import encode_text, transformer_step
    from finetune.toy_source import Batch
    from toy.model import T5_LENGTH

    t0 = time.perf_counter()
    z_src, z_tgt, text = latents(pipe, seed, start, batch, size, categories, cache)
    if copy_dropout:
        z_tgt, text = drop_to_copy(z_src, z_tgt, text, copy_dropout, seed * 1_000_003 + start)
    if not train_text:
        encoded = Batch(z_src, z_tgt, *encode_text(pipe, text, T5_LENGTH))   # = toy_source.encode_batch
        t1 = time.perf_counter()
        loss = transformer_step(pipe, optimizer, encoded, gen, edit_weight=edit_weight, sigma_logit_mean=sigma_mean)
        return loss, t1 - t0, time.perf_counter() - t1
    t1 = time.perf_counter()
    loss = _text_step(pipe, optimizer, params, z_src, z_tgt, text, gen, edit_weight, sigma_mean)
    return loss, t1 - t0, time.perf_counter() - t1


def drop_to_copy(z_src: Any, z_tgt: Any, text: list[str], p: float, seed: int) -> tuple[Any, list[str]]:
    """Each record with probability p (a stable draw per batch): instruction "" and target = source."""
    import random

    rng = random.Random(seed)
    drop = [rng.random() < p for _ in text]
    z_tgt = z_tgt.clone()
    for i, dropped in enumerate(drop):
        if dropped:
            z_tgt[i] = z_src[i]
    return z_tgt, ["" if dropped else t for t, dropped in zip(text, drop)]


def latents(pipe: Any, seed: int, start: int, batch: int, size: int, categories: Sequence[str] | None,
            cache: str | None = None) -> tuple[Any, Any, list[str]]:
    """(z_src, z_tgt, instructions) of records start..start+batch, the latents encoded by the pipeline's
    (frozen) VAE; with `cache`, read from or written to a file there (one folder per VAE: pilots continuing
    the same model share their records' latents, the costliest part of a step on a CPU)."""
    import hashlib

    import torch

    from finetune.flow_matching import encode_latents
    from finetune.toy_source import batch_arrays
    from toy.vae import to_pixels

    mix = hashlib.sha1(",".join(categories or []).encode()).hexdigest()[:8]
    path = Path(cache) / f"{seed}-{start}-{batch}-{size}-{mix}.pt" if cache else None
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=False)
        return saved["z_src"], saved["z_tgt"], saved["text"]
    src, tgt, text = batch_arrays(seed, start, batch, size, categories)
    both = encode_latents(pipe, to_pixels(np.concatenate([src, tgt])))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"z_src": both[:batch].clone(), "z_tgt": both[batch:].clone(), "text": text}, tmp)
        tmp.replace(path)   # whole or absent: two pilots may write the same step
    return both[:batch], both[batch:], text


def _text_step(pipe: Any, optimizer: Any, params: list[Any], z_src: Any, z_tgt: Any, text: list[str], gen: Any,
               edit_weight: float, sigma_mean: float = 0.0, grad_clip: float = 1.0) -> float:
    """`transformer_step` with the prompts encoded under gradient (the encoders train too); one clip over all."""
    import math

    import torch

    from finetune.flow_matching import flow_matching_loss, image_ids
    from finetune.objective import draw
    from toy.model import T5_LENGTH

    pipe.transformer.train()
    embeds, pooled, text_ids = pipe.encode_prompt(prompt=list(text), prompt_2=None, device=z_tgt.device,
                                                  num_images_per_prompt=1, max_sequence_length=T5_LENGTH)
    b, n = z_tgt.shape[:2]
    noisy_ids, source_ids = image_ids(pipe, int(math.isqrt(n)) * 2 * pipe.vae_scale_factor, z_tgt.device)
    d = draw(pipe.scheduler.config, [{"z_src": z_src[i], "z_tgt": z_tgt[i]} for i in range(b)], gen, None,
             sigma_mean)
    loss = flow_matching_loss(pipe.transformer, z_src, z_tgt, embeds, pooled, text_ids, noisy_ids, source_ids,
                              d.sigmas, torch.stack(d.noise).to(z_tgt.dtype), edit_weight=edit_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return float(loss.detach())


def timing(data_s: list[float], step_s: list[float], load: list[float]) -> dict[str, Any]:
    """Seconds per step (median, after the first 5 steps' warm-up), the data's and the step's apart, and the
    machine's 1-minute load average sampled every 10 steps."""
    skip = 5 if len(step_s) > 10 else 0
    med = (lambda xs: float(np.median(xs[skip:])) if xs[skip:] else None)
    total = [a + b for a, b in zip(data_s, step_s)]
    return {"s_per_step": med(total), "data_s_per_step": med(data_s), "train_s_per_step": med(step_s),
            "load_mean": float(np.mean(load)) if load else None, "load_max": float(max(load)) if load else None,
            "cpus": os.cpu_count()}


def val_losses(pipe: Any, n: int, size: int) -> dict[str, float]:
    """The flow-matching loss of the toy runs' validation batch (seed 999) at fixed draws
    (`finetune.objective.fixed_draws`): the plain mean and the mean weighted as at w = 4 (the v2 run's log)."""
    import math

    import torch

    from finetune.flow_matching import flow_matching_loss, image_ids
    from finetune.objective import fixed_draws
    from finetune.toy_source import batch_arrays, encode_batch
    from toy.model import T5_LENGTH

    b = encode_batch(pipe, *batch_arrays(VAL_SEED, 0, n, size), T5_LENGTH)
    d = fixed_draws([{"z_src": b.z_src[i], "z_tgt": b.z_tgt[i]} for i in range(n)], 0.0)
    noisy_ids, source_ids = image_ids(pipe, int(math.isqrt(b.z_tgt.shape[1])) * 2 * pipe.vae_scale_factor,
                                      b.z_tgt.device)
    pipe.transformer.eval()
    out = {}
    with torch.no_grad():
        for name, w in (("plain", 0.0), ("w4", 4.0)):
            out[name] = float(flow_matching_loss(pipe.transformer, b.z_src, b.z_tgt, b.prompt_embeds, b.pooled,
                                                 b.text_ids, noisy_ids, source_ids, d.sigmas,
                                                 torch.stack(d.noise), edit_weight=w))
    return out


def score(pipe: Any, n_eval: int, eval_steps: int, seed: int | None = None) -> dict[str, Any]:
    """The held-out split (or records 0.. of `seed`) as the model card scores it: per category PSNRs, and the
    quality bars' gains over the no-op and background gaps to the VAE ceiling (`toy.card.quality_bars`)."""
    from toy.card import HELD_OUT_SEED, KEYS, by_category, evaluate, quality_bars

    for enc in (pipe.text_encoder, pipe.text_encoder_2):
        enc.eval()
    started = time.perf_counter()
    table = by_category(evaluate(pipe, n_eval, seed=HELD_OUT_SEED if seed is None else seed, steps=eval_steps),
                        KEYS)
    bars = {r["category"]: {"gain": r["gain"], "bg_gap": r["bg_gap"], "ok": r["ok"]} for r in quality_bars(table)}
    return {"table": table, "bars": bars, "eval_s": round(time.perf_counter() - started, 1)}


def save_pipeline(pipe: Any, model: str, folder: str) -> None:
    """The continued pipeline (text encoders included: trained or not), loadable as the model it started from."""
    import shutil

    from actors.models import MODELS

    pipe.save_pretrained(folder)
    spec = MODELS.get(model)
    source = Path(spec.shipped) / "dropedit.json" if spec is not None and spec.shipped else None
    if source is not None and source.is_file():
        shutil.copy(source, Path(folder) / "dropedit.json")
    from actors.model_defaults import read_defaults, write_defaults
    from actors.reference_residual import prediction_of

    prediction = prediction_of(pipe.transformer)
    if prediction != "velocity":   # the parameterisation travels with the files
        write_defaults(folder, dataclasses.replace(read_defaults(folder), prediction=prediction),
                       f"continued by studies.toy.recipe_pilot with the {prediction} prior")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m studies.toy.recipe_pilot", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy-flux-kontext")
    p.add_argument("--edit-weight", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--data-start", type=int, default=DATA_START)
    p.add_argument("--categories", type=_categories, default=None,
                   help="the training records' categories, cycled: comma-separated, or v2 (v2's mix)")
    p.add_argument("--grow", type=_grow, default=None, help="L,S: grow to L dual and S single blocks")
    p.add_argument("--copy-heads", action="store_true", help="the grown dual blocks start as copy heads")
    p.add_argument("--open-gate", type=float, default=0.0,
                   help="with --copy-heads: their output reaches the residual at this gate from step 0")
    p.add_argument("--train-text-encoders", action="store_true")
    p.add_argument("--reference-residual", action="store_true",
                   help="the copy prior: the transformer predicts x0 minus the reference (its output layer zeroed)")
    p.add_argument("--residual-flow", action="store_true",
                   help="the copy prior, and the transformer reads the noisy residual z - (1 - sigma) x_ref")
    p.add_argument("--copy-dropout", type=float, default=0.0,
                   help="drop a record's instruction with this probability, its target then its source")
    p.add_argument("--sigma-mean", type=float, default=0.0,
                   help="location m of the logit-normal training σ (SD3; 0 = the toy runs' draw, > 0 nearer noise)")
    p.add_argument("--ordered-text", type=float, default=0.0, metavar="STRENGTH",
                   help="T5 reads its neighbour words (toy.text_order) at this bias; 0 = as shipped")
    p.add_argument("--pool", type=int, default=0, help="cycle over this many records from --data-start "
                   "(a memorisation test; a multiple of --batch)")
    p.add_argument("--score-seed", type=int, default=None,
                   help="score records 0.. of this toy.data seed instead of the held-out split")
    p.add_argument("--val-n", type=int, default=0, help="also the validation loss on this many seed-999 records")
    p.add_argument("--n-eval", type=int, default=80)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--latent-cache", default=None, help="a folder for the records' latents (one per VAE)")
    p.add_argument("--fill-cache", default=None, metavar="PART/PARTS",
                   help="only encode every PARTS-th step's latents from PART into --latent-cache, then exit")
    p.add_argument("--save", default=None, help="save the continued pipeline in this folder")
    p.add_argument("--out", default=None, help="write the result as JSON here (skip the pilot if it exists)")
    args = p.parse_args(argv)
    if args.copy_heads and not args.grow:
        p.error("--copy-heads needs --grow")
    if args.open_gate and not args.copy_heads:
        p.error("--open-gate needs --copy-heads")
    if args.pool and (args.pool < 0 or args.pool % args.batch):
        p.error(f"--pool must be a positive multiple of --batch ({args.batch})")
    if args.fill_cache and not args.latent_cache:
        p.error("--fill-cache needs --latent-cache")
    return args


def _grow(text: str) -> tuple[int, int]:
    try:
        layers, single = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--grow takes L,S (two integers), got {text!r}") from None
    return layers, single


def _categories(text: str) -> tuple[str, ...]:
    from toy.data import CATEGORIES

    cats = V2_MIX if text == "v2" else tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = sorted(set(cats) - set(CATEGORIES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown categories {unknown}; accepted: {', '.join(CATEGORIES)}, v2")
    return cats


def fill_cache(args: argparse.Namespace) -> int:
    """Encode the pilot's steps PART, PART + PARTS, ... into the latent cache (run PARTS of these side by side
    before the pilots, so that no two pilots encode the same records)."""
    import torch

    import actors

    part, parts = (int(x) for x in args.fill_cache.split("/"))
    pipe = actors.load_pipeline(args.model, device="cpu", dtype=torch.float32)
    pipe.vae.register_to_config(sample_size=args.size)
    for step in range(part, args.steps, parts):
        latents(pipe, args.data_seed, args.data_start + step * args.batch, args.batch, args.size, args.categories,
                args.latent_cache)
    return 0


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    if args.fill_cache:
        torch.set_num_threads(args.threads)
        return fill_cache(args)
    if args.out and Path(args.out).exists():
        print(f"{args.out} exists: skipped")
        return 0
    torch.set_num_threads(args.threads)
    result = pilot(args.model, args.edit_weight, args.steps, args.size, lr=args.lr, batch=args.batch,
                   n_eval=args.n_eval, warmup=args.warmup, data_seed=args.data_seed, data_start=args.data_start,
                   categories=args.categories, grow=args.grow, copy_heads=args.copy_heads,
                   train_text_encoders=args.train_text_encoders, val_n=args.val_n, save=args.save,
                   cache=args.latent_cache, open_gate=args.open_gate, reference_residual=args.reference_residual,
                   residual_flow=args.residual_flow, copy_dropout=args.copy_dropout,
                   sigma_mean=args.sigma_mean, ordered_text=args.ordered_text, pool=args.pool,
                   score_seed=args.score_seed)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(args.out)   # the JSON appears whole, so that "exists" means "done"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
