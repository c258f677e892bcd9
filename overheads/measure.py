"""Each policy's own work at real size against one real-size transformer block (issue 18, "Speed at real size").

    python -m overheads.measure [--family flux|qwen|both] [--sizes 1024,2048] [--repeats N] [--threads 1]
                              [--out DIR] [--scale real|tiny] [--warmup N] [--active 0.5]
                              [--region-active 0.2] [--region-keys 0.35] [--focus key=value,...]

With random weights (timing only), fp32, on the CPU: one block of each kind of FLUX.1-Kontext-dev (a dual
`FluxTransformerBlock` and a `FluxSingleTransformerBlock`, 24 heads × 128) and of Qwen-Image-Edit (a
`QwenImageTransformerBlock`) at the real token counts (noisy + source + text), and, through the project's own
code at the same size: SpotEdit's observe with the editor's SpotSelector on the real FLUX / Qwen-Image VAE
decoder, SpotEdit's K/V cache (SpotKV.assemble, full and partial calls, one layer), ToPi's statistics (the
processor's own work after the layer's one attention call) on one layer of each kind and its observe, TokenDrop's plan + observe (the adaptive mask) and its regularized
sampler step, focus's and regione's partition (cosine score + margin dilation / erosion-dilation) and their static
K/V cache (SpotKV.assemble, partial calls: focus with the kept source keys, regione with every one).
`overheads/table.py` turns them into shares of a step and of an edit.
`--scale tiny` runs the same code with tiny configs in seconds (tests/test_overheads.py).
Writes OUT/overheads.json and OUT/overheads.md.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLQwenImage,
    FluxKontextPipeline,
    FluxTransformer2DModel,
    QwenImageEditPipeline,
    QwenImageTransformer2DModel,
)

from actors.attention_stats import AttentionCollector, LayerStats
from actors.models import family as family_named
from actors.sampler import regularized_step
from actors.spot_attention import SpotCall, SpotKV
from actors.spot_selector import TimedScorer
from bench import markdown as report
from core.assignments import AssignmentError, parse_inline
from actors.families.flux_kontext.architecture import FLUX_KONTEXT_DEV_CONFIG as FLUX_KONTEXT_DEV
from actors.families.flux_kontext.architecture import FLUX_KONTEXT_TEXT_TOKENS
from actors.families.qwen_image_edit.architecture import QWEN_IMAGE_EDIT_CONFIG as QWEN_IMAGE_EDIT
from actors.families.qwen_image_edit.architecture import QWEN_IMAGE_EDIT_TEXT_TOKENS
from overheads import table as rep
from policies import PolicyError, make
from policies.base import Seen
from policies.spotedit import SpotEdit, fusion_alpha
from policies.tokendrop import TokenDrop
from policies.topi import ToPi
from policies.topi_select import top_k_count

# FLUX.1-Kontext-dev vae/config.json (the FLUX.1 autoencoder: ch 128, ch_mult 1, 2, 4, 4, 2 res blocks, z 16).
FLUX_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
    "act_fn": "silu", "latent_channels": 16, "norm_num_groups": 32, "sample_size": 1024, "scaling_factor": 0.3611,
    "shift_factor": 0.1159, "use_quant_conv": False, "use_post_quant_conv": False}
# Qwen-Image(-Edit) vae/config.json; equal to AutoencoderKLQwenImage's defaults in diffusers 0.42.
QWEN_VAE: dict[str, Any] = {"base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                            "attn_scales": [], "temperal_downsample": [False, True, True]}
TINY_WIDTH = {"num_attention_heads": 2, "attention_head_dim": 16, "joint_attention_dim": 32,
              "axes_dims_rope": [4, 6, 6]}   # rope axes sum to the head dim, as (16, 56, 56) to 128


@dataclass(frozen=True)
class Scale:
    name: str
    transformer: dict[str, dict[str, Any]]   # family -> config (its depth prices the step; one block is built)
    vae: dict[str, dict[str, Any]]
    text_tokens: dict[str, tuple[int, ...]]  # one per transformer call of a step
    sizes: tuple[int, ...]


REAL = Scale("real", {"flux": FLUX_KONTEXT_DEV, "qwen": QWEN_IMAGE_EDIT}, {"flux": FLUX_VAE, "qwen": QWEN_VAE},
             {"flux": FLUX_KONTEXT_TEXT_TOKENS, "qwen": QWEN_IMAGE_EDIT_TEXT_TOKENS}, (1024, 2048))
TINY = Scale("tiny",
             {"flux": {**FLUX_KONTEXT_DEV, **TINY_WIDTH, "pooled_projection_dim": 32},
              "qwen": {**QWEN_IMAGE_EDIT, **TINY_WIDTH}},
             {"flux": {**FLUX_VAE, "block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 4},
              "qwen": {**QWEN_VAE, "base_dim": 4, "num_res_blocks": 1}},
             {"flux": (8,), "qwen": (8, 6)}, (64, 128))
SCALES = {s.name: s for s in (REAL, TINY)}


@dataclass(frozen=True)
class Regions:
    """focus and regione: the active share of their partial steps, the source share focus keeps as keys when its
    reference_margin drops some (a square: the region and its margin), and focus's parameters (empty: defaults)."""
    active: float = 0.2
    keys: float = 0.35
    focus: dict[str, Any] = field(default_factory=dict)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> list[float]:
    """Wall seconds of `repeats` calls after `warmup` untimed ones (CPU: no device to synchronise)."""
    out = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            started = time.perf_counter()
            fn()
            if i >= warmup:
                out.append(time.perf_counter() - started)
    return out


def depth(family: str, config: dict[str, Any]) -> dict[str, int]:
    if family == "flux":
        return {"dual": int(config["num_layers"]), "single": int(config["num_single_layers"])}
    return {"block": int(config["num_layers"])}


def build_model(family: str, config: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """The family's transformer at the config's width with ONE block of each kind (random weights)."""
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    kwargs["num_layers"] = 1
    if family == "flux":
        kwargs["num_single_layers"] = 1
    torch.manual_seed(seed)
    cls = FluxTransformer2DModel if family == "flux" else QwenImageTransformer2DModel
    return cls(**kwargs).eval()


def build_vae(family: str, config: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return (AutoencoderKL if family == "flux" else AutoencoderKLQwenImage)(**config).eval()


def model_inputs(family: str, config: dict[str, Any], grid: tuple[int, int], text: int) -> dict[str, Any]:
    """One call's inputs as the pipelines build them: [noisy, source] image tokens, `text` text tokens."""
    g = torch.Generator().manual_seed(0)
    n = grid[0] * grid[1]
    hidden = torch.randn(1, 2 * n, int(config["in_channels"]), generator=g)
    states = torch.randn(1, text, int(config["joint_attention_dim"]), generator=g)
    if family == "qwen":   # the pipeline drops an all-ones prompt mask (batch of one)
        return {"hidden_states": hidden, "encoder_hidden_states": states, "encoder_hidden_states_mask": None,
                "timestep": torch.tensor([0.5]), "img_shapes": [[(1, *grid), (1, *grid)]], "return_dict": False}
    ids = FluxKontextPipeline._prepare_latent_image_ids(1, grid[0], grid[1], torch.device("cpu"), torch.float32)
    source_ids = ids.clone()
    source_ids[:, 0] = 1   # Kontext marks the condition image on the first id axis
    return {"hidden_states": hidden, "encoder_hidden_states": states,
            "pooled_projections": torch.randn(1, int(config["pooled_projection_dim"]), generator=g),
            "timestep": torch.tensor([0.5]), "img_ids": torch.cat([ids, source_ids]),
            "txt_ids": torch.zeros(text, 3), "guidance": torch.tensor([2.5]), "return_dict": False}


def block_kinds(model: torch.nn.Module, family: str) -> dict[str, torch.nn.Module]:
    if family == "flux":
        return {"dual": model.transformer_blocks[0], "single": model.single_transformer_blocks[0]}
    return {"block": model.transformer_blocks[0]}


def time_blocks(model: torch.nn.Module, family: str, inputs: dict[str, Any], repeats: int, warmup: int
                ) -> tuple[dict[str, list[float]], dict[str, tuple[torch.nn.Module, tuple, dict[str, Any]]]]:
    """Per block kind, the forward's seconds in each model call (hooks around the block), and the attention
    module with the inputs its block gave it in the first call (for ToPi's statistics at the same size)."""
    samples: dict[str, list[float]] = {}
    captured: dict[str, tuple[torch.nn.Module, tuple, dict[str, Any]]] = {}
    handles = []
    for kind, block in block_kinds(model, family).items():
        started: list[float] = []
        out = samples.setdefault(kind, [])
        handles.append(block.register_forward_pre_hook(lambda m, a, s=started: s.append(time.perf_counter())))
        handles.append(block.register_forward_hook(
            lambda m, a, o, s=started, out=out: out.append(time.perf_counter() - s.pop())))
        handles.append(block.attn.register_forward_pre_hook(_capture(kind, captured), with_kwargs=True))
    try:
        timed(lambda: model(**inputs), repeats, warmup)
    finally:
        for handle in handles:
            handle.remove()
    return {kind: s[warmup:] for kind, s in samples.items()}, captured


def _capture(kind: str, captured: dict[str, Any]) -> Callable[..., None]:
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        captured.setdefault(kind, (module, args, kwargs))   # the first call's; nothing is changed
    return hook


def time_topi_stats(family: str, attn: torch.nn.Module, args: tuple, kwargs: dict[str, Any], num_noisy: int,
                    text: int, repeats: int, warmup: int) -> tuple[list[float], LayerStats]:
    """What ToPi adds to a representative layer on an anchor step, on captured real inputs: the family's
    statistics processor computes the layer from one attention call (the stock output and each query's
    log-sum-exp, `AttentionCollector.attend`); the seconds are the collector's own, the statistics' work after
    that call (noisy × source products, value norms, similarity), as an edit's trace reports them."""
    collector = AttentionCollector(num_noisy=num_noisy)
    processor = family_named(family).stats_processor(attn.processor, 0, collector)
    seconds: list[float] = []
    last: dict[int, LayerStats] = {}
    with torch.no_grad():
        for i in range(warmup + repeats):
            collector.request((0,))
            collector.text_len = text   # what the dual blocks set before the single ones
            processor(attn, *args, **kwargs)
            stats, spent = collector.take()
            last.update(stats)
            if i >= warmup:
                seconds.append(spent)
    return seconds, last[0]


def time_topi_observe(family: str, grid: tuple[int, int], stats: dict[str, LayerStats], layers_depth: dict[str, int],
                      repeats: int, warmup: int) -> list[float]:
    """ToPi's observe after an anchor step (influence sums over its layers, the minimal-mass set)."""
    info = rep.run_info(family, grid, rep.default_steps(family), sum(layers_depth.values()))
    run = ToPi().start(info)
    attention = {layer: stats[rep.layer_kind(family, layer, layers_depth)] for layer in run.layers}
    n = info.num_noisy
    seen = Seen(x0=torch.zeros(n, 64), source=torch.zeros(n, 64), velocity=torch.zeros(n, 64), attention=attention)
    step = rep.steps_of(info)[0]
    return timed(lambda: run.observe(step, seen), repeats, warmup)


def latents(grid: tuple[int, int], channels: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed x̂0 and source [N, C]: the source with a changed disc (something for the masks to find)."""
    g = torch.Generator().manual_seed(0)
    source = torch.randn(grid[0] * grid[1], channels, generator=g)
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    disc = ((rows - grid[0] / 2) ** 2 + (cols - grid[1] / 3) ** 2 < (grid[0] / 4) ** 2).flatten()
    x0 = source + 0.05 * torch.randn(source.shape, generator=g)
    x0[disc] += torch.randn(int(disc.sum()), channels, generator=g)
    return x0, source


def time_tokendrop(family: str, grid: tuple[int, int], num_layers: int, repeats: int, warmup: int
                   ) -> dict[str, list[float]]:
    """TokenDrop's plan + observe on a pruned step (the adaptive mask on the token grid), and the regularized
    sampler step on the tokens it dropped."""
    info = rep.run_info(family, grid, rep.default_steps(family), num_layers)
    run = TokenDrop().start(info)
    x0, source = latents(grid)
    seen = Seen(x0=x0, source=source, velocity=x0)
    step = rep.steps_of(info)[run.full_steps]

    def policy() -> None:
        run.observe(step, seen)
        run.plan(step)

    out = {"tokendrop_policy": timed(policy, repeats, warmup)}
    dropped = ~run.keep_aligned.flatten()
    euler = (x0 - 0.05 * source)[None]
    out["tokendrop_reg"] = timed(lambda: regularized_step(euler, x0[None], source[None], dropped, step.sigma,
                                                          step.sigma_next, True), repeats, warmup)
    return out


def selector_pipe(family: str, vae: torch.nn.Module) -> Any:
    """What SpotSelector uses of a pipeline: the VAE, its scale factor and the pipeline's unpacking."""
    cls = FluxKontextPipeline if family == "flux" else QwenImageEditPipeline
    return types.SimpleNamespace(vae=vae, vae_scale_factor=8, _unpack_latents=cls._unpack_latents)


def time_spotedit(family: str, vae: torch.nn.Module, size: int, grid: tuple[int, int], num_layers: int,
                  repeats: int) -> dict[str, list[float]]:
    """SpotEdit's observe before a partial step with the editor's scorer (SpotSelector, lpips_vae): the first
    call also decodes the source (once per edit) and is the warm-up."""
    x0, source = latents(grid)
    scorer = TimedScorer(selector_pipe(family, vae), family, size, size, source)
    info = rep.run_info(family, grid, rep.default_steps(family), num_layers, token_scores=scorer)
    run = SpotEdit().start(info)
    index = next(i for i in range(info.steps - 1) if not run.is_full(i + 1))   # the next step may be partial
    step, seen = rep.steps_of(info)[index], Seen(x0=x0, source=source, velocity=x0)
    first = timed(lambda: run.observe(step, seen), 1)
    return {"spotedit_first": first, "spotedit_selector": timed(lambda: run.observe(step, seen), repeats)}


def time_kv(grid: tuple[int, int], heads: int, head_dim: int, active: float, repeats: int, warmup: int
            ) -> dict[str, list[float]]:
    """SpotEdit's K/V cache in one layer (SpotKV.assemble, the condition image cached): a full call clones
    the noisy and source K/V; a partial call blends the cache toward the source (α(t), recursive), writes the
    active rows and joins the cached image K/V."""
    n = grid[0] * grid[1]
    g = torch.Generator().manual_seed(0)
    kv = SpotKV(num_noisy=n, num_source=n, key_rotary=None)
    k, v = (torch.randn(1, 2 * n, heads, head_dim, generator=g) for _ in range(2))
    out = {"kv_full": timed(lambda: kv.assemble(0, k, v), repeats, warmup)}
    count = top_k_count(n, active)
    index = torch.randperm(n, generator=g)[:count].sort().values
    kv.call = SpotCall(active=index, source_queries=False, noisy_context=True, alpha=fusion_alpha(0.5), recursive=True)
    k_act, v_act = k[:, :count].clone(), v[:, :count].clone()
    out["kv_partial"] = timed(lambda: kv.assemble(0, k_act, v_act), repeats, warmup)
    return out


def square(grid: tuple[int, int], share: float) -> torch.Tensor:
    """Bool over the grid's tokens: a centred square holding about `share` of them (at least one token)."""
    side = min(grid[0], grid[1], max(1, round(math.sqrt(share * grid[0] * grid[1]))))
    mask = torch.zeros(grid, dtype=torch.bool)
    top, left = (grid[0] - side) // 2, (grid[1] - side) // 2
    mask[top:top + side, left:left + side] = True
    return mask.flatten()


def region_shares(grid: tuple[int, int], regions: Regions) -> dict[str, float]:
    """The active share of the partial steps' square, and the source share focus keeps as keys (1: every one,
    when its reference_margin is None)."""
    drops = make("focus", **regions.focus).reference_margin is not None
    return {"active": float(square(grid, regions.active).float().mean()),
            "keys": float(square(grid, regions.keys).float().mean()) if drops else 1.0}


def time_static_kv(grid: tuple[int, int], heads: int, head_dim: int, regions: Regions, repeats: int, warmup: int
                   ) -> dict[str, list[float]]:
    """focus's and regione's K/V cache in one layer on a partial call (SpotKV.assemble, static: no blend): the
    active rows are written into the cache filled by a full call, then cache and source K/V are joined; focus
    keeps the source keys of a square around the region (`regions.keys`), regione every one."""
    n = grid[0] * grid[1]
    g = torch.Generator().manual_seed(0)
    kv = SpotKV(num_noisy=n, num_source=n, key_rotary=None)
    k, v = (torch.randn(1, 2 * n, heads, head_dim, generator=g) for _ in range(2))
    kv.assemble(0, k, v)   # a full call fills the cache
    index = torch.nonzero(square(grid, regions.active)).flatten()
    keep = torch.nonzero(square(grid, regions.keys)).flatten()
    k_act, v_act = k[:, :index.numel()].clone(), v[:, :index.numel()].clone()
    del k, v
    out = {}
    for name, keys in (("kv_static", keep), ("kv_static_all", None)):
        kv.call = SpotCall(active=index, source_queries=False, noisy_context=True, alpha=None, source_keys=keys)
        out[name] = timed(lambda: kv.assemble(0, k_act, v_act), repeats, warmup)
    return out


def time_partitions(family: str, vae: torch.nn.Module, size: int, grid: tuple[int, int], num_layers: int,
                    focus: dict[str, Any], repeats: int, warmup: int) -> dict[str, list[float]]:
    """focus's and regione's observe on the step that partitions (the editor's TimedScorer with the cosine
    score, then focus's threshold and margin dilation / RegionE's threshold, erosion and dilation)."""
    x0, source = latents(grid)
    scorer = TimedScorer(selector_pipe(family, vae), family, size, size, source)
    info = rep.run_info(family, grid, rep.default_steps(family), num_layers, token_scores=scorer)
    steps, seen = rep.steps_of(info), Seen(x0=x0, source=source, velocity=x0)
    out = {}
    for name, run in (("focus", make("focus", **focus).start(info)), ("regione", make("regione").start(info))):
        step = steps[next(i for i in range(info.steps - 1) if run.is_full(i) and not run.is_full(i + 1))]
        out[f"{name}_partition"] = timed(lambda run=run, step=step: run.observe(step, seen), repeats, warmup)
    return out


def measure_size(family: str, scale: Scale, model: torch.nn.Module, vae: torch.nn.Module, size: int,
                 repeats: int, warmup: int, active: float, regions: Regions = Regions()) -> dict[str, Any]:
    """Every timing of one family at one image size (px); the shares are added by `summarise`."""
    config, grid = scale.transformer[family], (size // 16, size // 16)   # VAE /8, then 2×2 packing
    n, texts, layers = grid[0] * grid[1], scale.text_tokens[family], depth(family, scale.transformer[family])
    log(f"{family} {size}²: blocks ({2 * n} image + {texts[0]} text tokens)")
    # Qwen's two CFG calls differ by a few text tokens: the block is timed at the first call's length
    blocks, captured = time_blocks(model, family, model_inputs(family, config, grid, texts[0]), repeats, warmup)
    timings = {f"block_{kind}": s for kind, s in blocks.items()}
    stats = {}
    for kind, (attn, args, kwargs) in captured.items():
        log(f"{family} {size}²: ToPi statistics on the {kind} layer")
        timings[f"topi_stats_{kind}"], stats[kind] = time_topi_stats(family, attn, args, kwargs, n, texts[0],
                                                                     repeats, warmup)
    del captured
    timings["topi_observe"] = time_topi_observe(family, grid, stats, layers, repeats, warmup)
    timings.update(time_tokendrop(family, grid, sum(layers.values()), repeats, warmup))
    log(f"{family} {size}²: SpotSelector ({size // 8}² latent), K/V cache")
    timings.update(time_spotedit(family, vae, size, grid, sum(layers.values()), repeats))
    heads, head_dim = int(config["num_attention_heads"]), int(config["attention_head_dim"])
    timings.update(time_kv(grid, heads, head_dim, active, repeats, warmup))
    log(f"{family} {size}²: focus and regione (partition, static K/V cache)")
    timings.update(time_partitions(family, vae, size, grid, sum(layers.values()), regions.focus, repeats, warmup))
    timings.update(time_static_kv(grid, heads, head_dim, regions, repeats, warmup))
    result = {"family": family, "size": size, "grid": list(grid), "latent": [size // 8, size // 8],
              "tokens": {"noisy": n, "source": n, "text": list(texts)}, "depth": layers, "calls": len(texts),
              "schedule": rep.schedule(family, rep.default_steps(family), sum(layers.values()), regions.focus),
              "region_shares": region_shares(grid, regions),
              "timings": {name: rep.spread(s) for name, s in timings.items()}}
    result["per_edit"] = rep.per_edit(result)
    result["policies"] = rep.summarise(result)
    return result


def measure(families: list[str], scale: Scale, sizes: list[int], repeats: int, warmup: int,
            active: float, regions: Regions = Regions()) -> list[dict[str, Any]]:
    results = []
    for family in families:
        log(f"{family}: building one block of each kind and the VAE ({scale.name} configs, random weights)")
        model, vae = build_model(family, scale.transformer[family]), build_vae(family, scale.vae[family])
        for size in sizes:
            results.append(measure_size(family, scale, model, vae, size, repeats, warmup, active, regions))
            gc.collect()
        del model, vae
        gc.collect()
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m overheads.measure", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=("flux", "qwen", "both"), default="both")
    p.add_argument("--sizes", default=None, help="image sizes in px, comma-separated (real: 1024,2048; tiny: 64,128)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before each timing (not the selector's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--active", type=float, default=0.5, help="SpotEdit partial steps: share of noisy tokens active")
    p.add_argument("--region-active", type=float, default=0.2,
                   help="focus and regione partial steps: share of noisy tokens active (a centred square)")
    p.add_argument("--region-keys", type=float, default=0.35, help="focus partial steps with a reference_margin: "
                   "share of source tokens kept as keys (the region and its margin)")
    p.add_argument("--focus", default="", help="focus's parameters, key=value,... (e.g. refresh=0.2,final=0.1)")
    p.add_argument("--scale", choices=sorted(SCALES), default="real")
    p.add_argument("--out", default="results/overheads")
    a = p.parse_args(argv)
    if a.repeats < 1 or a.warmup < 0 or a.threads < 1 or not 0 < a.active < 1:
        p.error("--repeats and --threads must be ≥ 1, --warmup ≥ 0, --active in (0, 1)")
    if not 0 < a.region_active < 1 or not 0 < a.region_keys <= 1:
        p.error("--region-active must be in (0, 1), --region-keys in (0, 1]")
    try:
        focus = parse_inline(a.focus) if a.focus else {}
        make("focus", **focus)
    except (AssignmentError, PolicyError) as err:
        p.error(f"--focus: {err}")
    a.regions = Regions(a.region_active, a.region_keys, focus)
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, write OUT/overheads.json and OUT/overheads.md, print the table; returns the document."""
    a = parse_args(argv)
    scale = SCALES[a.scale]
    sizes = [int(s) for s in a.sizes.split(",")] if a.sizes else list(scale.sizes)
    if any(s % 16 for s in sizes):
        raise SystemExit("--sizes must be multiples of 16 (VAE /8, then 2×2 packing)")
    families = ["flux", "qwen"] if a.family == "both" else [a.family]
    threads = torch.get_num_threads()
    torch.set_num_threads(a.threads)   # restored afterwards: a test may call this in its own process
    try:
        machine = {**report.machine(), "load_start": report.load_average()}
        log(f"machine: {machine['cpu']}, {machine['cores']} cores, {a.threads} torch thread(s), torch "
            f"{machine['torch']}; load average before {machine['load_start']}")
        results = measure(families, scale, sizes, a.repeats, a.warmup, a.active, a.regions)
        machine["load_end"] = report.load_average()
    finally:
        torch.set_num_threads(threads)
    doc = {"scale": scale.name, "dtype": "float32", "repeats": a.repeats, "warmup": a.warmup, "active": a.active,
           "regions": {"active": a.regions.active, "keys": a.regions.keys, "focus": a.regions.focus,
                       "focus_params": make("focus", **a.regions.focus).params()},
           "machine": machine, "loaded": report.loaded(machine), "limit": rep.LIMIT, "results": results}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overheads.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = rep.markdown(doc)
    (out / "overheads.md").write_text(text)
    print(text)
    log(f"load average after {machine['load_end']}; wrote {out / 'overheads.json'} and {out / 'overheads.md'}")
    return doc


if __name__ == "__main__":
    main()
