"""How often each policy's own work runs in one edit (driven through the policies' own schedules), its share of
a real-size step and edit, and the Markdown of `overheads/measure.py`.

Shares: own work per step (on a step where it runs) ÷ one full step (block medians × depth × transformer calls),
and own work per edit (each piece × how often the policy's defaults run it) ÷ steps × that step. The edit here
is the transformer loop only (no text encoders, no VAE encode/decode), so the shares are upper bounds.
"""
from __future__ import annotations

import statistics
from typing import Any, Callable

import torch

from actors.attention_stats import LayerStats
from actors.models import family as family_named
from policies import make
from policies.base import RunInfo, Seen, Step
from policies.spotedit import SpotEdit
from policies.tokendrop import TokenDrop
from policies.topi import ToPi

LIMIT = 0.02   # the bar: a policy's own work ≤ 2 % of a real-size edit
TRANSFORMER_CLASS = {"flux": "FluxTransformer2DModel", "qwen": "QwenImageTransformer2DModel"}
COUNT_GRID = (8, 8)   # the schedules do not depend on the grid: count on a small one

# Why a piece costs what it costs (used where a policy is above the bar); {h}, {w}, {layers}, {calls} filled in.
WHY = {
    "spotedit_selector": "SpotSelector decodes x̂0 at full latent resolution ({h}×{w}) every step through the VAE "
                         "decoder's conv_in, mid block (self-attention over all {h}·{w} latent positions) and "
                         "first up block (its resnets, then a ×2 upsample and a conv at twice the resolution){qwen}",
    "spotedit_first": "the first score also decodes the source latent (once per edit)",
    "kv_partial": "each partial step, in each of {layers} layers × {calls} calls, blends the whole noisy K/V cache "
                  "toward the source (3 temporaries per tensor), writes the active rows and concatenates cache "
                  "and source K/V into new tensors",
    "kv_full": "each full step clones every layer's noisy and source K and V into the cache",
    "kv_static": "each partial step, in each of {layers} layers × {calls} calls, writes the active rows ({active} "
                 "of the noisy tokens) into the static cache, gathers the kept source keys ({keys} of the source: "
                 "a square region and its margin) and concatenates cache and kept source K/V into new tensors",
    "kv_static_all": "each partial step, in each of {layers} layers × {calls} calls, writes the active rows ({active} "
                     "of the noisy tokens) into the static cache and concatenates the whole noisy cache and every "
                     "source K/V into new tensors (no blend)",
    "focus_partition": "the region decision: the cosine distance of x̂0 to the source over {n} tokens × 64 "
                       "channels, the threshold and the margin dilation (policies.focus.grow), once per partition",
    "regione_partition": "the one partition: cosine similarity over {n} tokens × 64 channels, the threshold, a 3×3 "
                         "erosion and a 5×5 dilation (policies.regione.erode_dilate), once per edit",
    "topi_stats": "ToPi's statistics, after the layer's own attention call (which also returns each query's "
                  "log-sum-exp): every noisy query's products with the source keys, their exp and sums, the value "
                  "norms and the similarity, on each representative layer of each anchor step",
    "topi_observe": "the influence sums and the sorted mass selection",
    "tokendrop_policy": "difference map, 11×11 blur, histogram and triangle threshold on the token grid",
    "tokendrop_reg": "the regularized sampler's closed form on the dropped tokens",
}
QWEN_CONVS = ("; the Qwen-Image decoder's causal 3-D convs run all 3×3×3 taps over two zero-padded frames "
              "(3× the 2-D work)")


def run_info(family: str, grid: tuple[int, int], steps: int, num_layers: int,
             token_scores: Callable[[torch.Tensor, str], torch.Tensor] | None = None) -> RunInfo:
    """What a policy sees of one edit (one reference, aligned with the noisy grid)."""
    return RunInfo(family=family, noisy_grid=grid, source_grids=(grid,), steps=steps,
                   sigmas=torch.linspace(1.0, 0.0, steps + 1), seed=0, device=torch.device("cpu"),
                   num_layers=num_layers, architecture=TRANSFORMER_CLASS[family], token_scores=token_scores,
                   paper=family_named(family).paper)


def default_steps(family: str) -> int:
    """The papers' protocol the adapters default to (Kontext 28 steps, Qwen-Image-Edit 50)."""
    return int(family_named(family).adapter.default_steps)


def steps_of(info: RunInfo) -> list[Step]:
    s = info.sigmas.tolist()
    return [Step(index=i, sigma=s[i], sigma_next=s[i + 1]) for i in range(info.steps)]


def _seen(n: int, attention: dict[int, Any] | None = None) -> Seen:
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(n, 64, generator=g)
    return Seen(x0=x0, source=torch.zeros(n, 64), velocity=x0, attention=attention or {})


def fake_stats(n: int, heads: int = 2) -> LayerStats:
    g = torch.Generator().manual_seed(1)
    return LayerStats(*(torch.rand(heads, n, generator=g) for _ in range(3)), torch.rand(n, generator=g))


def tokendrop_schedule(family: str, steps: int, num_layers: int) -> dict[str, int]:
    """Masks computed (observe) and steps that drop tokens (plan: the regularized sampler runs there)."""
    info = run_info(family, COUNT_GRID, steps, num_layers)
    run, seen, masks, pruned = TokenDrop().start(info), _seen(info.num_noisy), 0, 0
    for step in steps_of(info):
        pruned += run.plan(step).keep_source is not None
        before = run.keep_aligned
        run.observe(step, seen)
        masks += run.keep_aligned is not before
    return {"tokendrop_masks": masks, "tokendrop_pruned_steps": pruned}


def topi_schedule(family: str, steps: int, num_layers: int) -> dict[str, Any]:
    """Anchor steps (attention statistics on the representative layers) with ToPi's defaults."""
    info = run_info(family, COUNT_GRID, steps, num_layers)
    run = ToPi().start(info)
    anchors = 0
    for step in steps_of(info):
        layers = run.plan(step).attention_layers
        anchors += bool(layers)
        run.observe(step, _seen(info.num_noisy, {layer: fake_stats(info.num_source) for layer in layers}))
    return {"topi_anchors": anchors, "topi_layers": list(run.layers)}


def _half_edited(calls: list[int]) -> Callable[[torch.Tensor, str], torch.Tensor]:
    """Token scores that count their calls: left half unchanged (score 0), right half edited (score 1), so
    that the region policies make partial steps wherever they may."""
    def scores(x0: torch.Tensor, metric: str) -> torch.Tensor:
        calls[0] += 1
        cols = torch.arange(x0.shape[0]) % COUNT_GRID[1]
        return (cols >= COUNT_GRID[1] // 2).float()
    return scores


def _drive(run: Any, info: RunInfo) -> int:
    """Plan and observe every step of an edit; the number of partial steps (some noisy tokens frozen)."""
    seen, partial = _seen(info.num_noisy), 0
    for step in steps_of(info):
        partial += run.plan(step).active_noisy is not None
        run.observe(step, seen)
    return partial


def spotedit_schedule(family: str, steps: int, num_layers: int) -> dict[str, int]:
    """Selector calls, partial and full steps with SpotEdit's defaults, when half the image is unchanged."""
    calls = [0]
    info = run_info(family, COUNT_GRID, steps, num_layers, token_scores=_half_edited(calls))
    partial = _drive(SpotEdit().start(info), info)
    return {"spotedit_selector_calls": calls[0], "spotedit_partial_steps": partial,
            "spotedit_full_steps": steps - partial}


def focus_schedule(family: str, steps: int, num_layers: int, params: dict[str, Any] | None = None
                   ) -> dict[str, int]:
    """Partitions (region decisions: token score + margin dilation; 1 + the refresh steps that precede a partial
    step), partial and full steps of focus with `params` (None: its defaults), half the image edited. Full steps
    are counted whether or not focus's temporal cache would skip them (an upper bound of the K/V work)."""
    calls = [0]
    info = run_info(family, COUNT_GRID, steps, num_layers, token_scores=_half_edited(calls))
    run = make("focus", **(params or {})).start(info)
    partial = _drive(run, info)
    return {"focus_partitions": calls[0], "focus_refresh_steps": len(run.applied()["refresh_steps"]),
            "focus_partial_steps": partial, "focus_full_steps": steps - partial}


def regione_schedule(family: str, steps: int, num_layers: int) -> dict[str, int]:
    """RegionE's one partition, partial and full steps with its defaults (Kontext's 28 steps: full 0-5, 15, 26,
    27), half the image edited. Its velocity cache may skip partial calls: the partial count is an upper bound."""
    calls = [0]
    info = run_info(family, COUNT_GRID, steps, num_layers, token_scores=_half_edited(calls))
    partial = _drive(make("regione").start(info), info)
    return {"regione_partitions": calls[0], "regione_partial_steps": partial, "regione_full_steps": steps - partial}


def schedule(family: str, steps: int, num_layers: int, focus: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"steps": steps, **tokendrop_schedule(family, steps, num_layers),
            **topi_schedule(family, steps, num_layers), **spotedit_schedule(family, steps, num_layers),
            **focus_schedule(family, steps, num_layers, focus), **regione_schedule(family, steps, num_layers)}


def spread(samples: list[float]) -> dict[str, Any]:
    """Median, quartiles and range of repeated timings (seconds)."""
    q = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) > 1 else [samples[0]] * 3
    return {"median": statistics.median(samples), "p25": q[0], "p75": q[2], "min": min(samples),
            "max": max(samples), "n": len(samples), "samples": samples}


def layer_kind(family: str, layer: int, depth: dict[str, int]) -> str:
    """Flux layers are numbered dual then single (actors.routing); Qwen has one kind."""
    if family == "flux":
        return "dual" if layer < depth["dual"] else "single"
    return "block"


def step_seconds(result: dict[str, Any], stat: str = "median") -> float:
    """One full step: block time × depth, per kind, × transformer calls per step."""
    t = result["timings"]
    return result["calls"] * sum(t[f"block_{kind}"][stat] * n for kind, n in result["depth"].items())


def pieces(result: dict[str, Any], stat: str = "median") -> dict[str, list[tuple[str, float, float]]]:
    """Per policy: (piece, seconds on a step where the policy runs, seconds over one edit). Pieces that run on
    full steps (K/V cache fills, partitions) or once per edit count in the edit only."""
    t, s, calls, depth = result["timings"], result["schedule"], result["calls"], result["depth"]
    m = {name: v[stat] for name, v in t.items()}
    per_layers = calls * sum(depth.values())   # a K/V timing is one layer's, one call's
    stats = calls * sum(m[f"topi_stats_{layer_kind(result['family'], layer, depth)}"] for layer in s["topi_layers"])
    kv_partial, kv_full = per_layers * m["kv_partial"], per_layers * m["kv_full"]
    first_extra = max(m["spotedit_first"] - m["spotedit_selector"], 0.0)   # the source's decoder features
    return {
        "tokendrop": [("tokendrop_policy", m["tokendrop_policy"], s["tokendrop_masks"] * m["tokendrop_policy"]),
                      ("tokendrop_reg", m["tokendrop_reg"], s["tokendrop_pruned_steps"] * m["tokendrop_reg"])],
        "topi": [("topi_stats", stats, s["topi_anchors"] * stats),
                 ("topi_observe", m["topi_observe"], s["topi_anchors"] * m["topi_observe"])],
        "spotedit": [("spotedit_selector", m["spotedit_selector"],
                      s["spotedit_selector_calls"] * m["spotedit_selector"]),
                     ("spotedit_first", 0.0, first_extra),
                     ("kv_partial", kv_partial, s["spotedit_partial_steps"] * kv_partial),
                     ("kv_full", 0.0, s["spotedit_full_steps"] * kv_full)],
        **{policy: region_pieces(policy, m, s, per_layers, static_kv(result, policy))
           for policy in ("focus", "regione")},
    }


def static_kv(result: dict[str, Any], policy: str) -> str:
    """The static K/V timing a region policy's partial calls run: focus's with the kept source keys when it
    drops some (its reference_margin set), every source key otherwise (regione always)."""
    return "kv_static" if policy == "focus" and result["region_shares"]["keys"] < 1 else "kv_static_all"


def region_pieces(policy: str, m: dict[str, float], s: dict[str, Any], per_layers: int, kv: str
                  ) -> list[tuple[str, float, float]]:
    """focus / regione: the partition (on the full step before partial ones: edit only), the static K/V cache's
    partial calls (`kv`) and the full calls' cache fill."""
    partial, partition = per_layers * m[kv], f"{policy}_partition"
    return [(partition, 0.0, s[f"{policy}_partitions"] * m[partition]),
            (kv, partial, s[f"{policy}_partial_steps"] * partial),
            ("kv_full", 0.0, s[f"{policy}_full_steps"] * per_layers * m["kv_full"])]


RUNS_ON = {"tokendrop": "a pruned step", "topi": "an anchor step", "spotedit": "a partial step",
           "focus": "a partial step", "regione": "a partial step"}


def _why(result: dict[str, Any], policy: dict[str, Any], parts: list[tuple[str, float, float]]) -> str:
    """Which share is above the bar, the largest piece and what it does, then the other pieces' shares."""
    edit = policy["edit_s"]
    where = [f"{_pct(policy['share_step'])} of {policy['runs_on']}"] if policy["share_step"] > LIMIT else []
    where += [f"{_pct(policy['share_edit'])} of the edit"] if policy["share_edit"] > LIMIT else []
    ranked = sorted(parts, key=lambda p: -p[2])
    name, _, seconds = ranked[0]
    h, w = result["latent"]
    region = result.get("region_shares", {})
    text = WHY[name].format(h=h, w=w, layers=sum(result["depth"].values()), calls=result["calls"],
                            qwen=QWEN_CONVS if result["family"] == "qwen" else "", n=result["tokens"]["noisy"],
                            active=_pct(region.get("active", 0.0)), keys=_pct(region.get("keys", 0.0)))
    rest = ", ".join(f"{n} {_pct(s / edit)}" for n, _, s in ranked[1:] if s > 0)
    return (f"above at {' and '.join(where)}; largest piece {name} ({_pct(seconds / edit)} of the edit): {text}"
            + (f"; then {rest}" if rest else ""))


def summarise(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per policy: own work per step and per edit, their shares of a step and an edit, and why where above."""
    step, edit = step_seconds(result), result["schedule"]["steps"] * step_seconds(result)
    quartiles = {stat: pieces(result, stat) for stat in ("p25", "p75")}
    out = {}
    for policy, parts in pieces(result).items():
        own_step, own_edit = sum(p[1] for p in parts), sum(p[2] for p in parts)
        share_step, share_edit = own_step / step, own_edit / edit
        row = out[policy] = {
            "runs_on": RUNS_ON[policy], "own_step_s": own_step, "step_s": step, "share_step": share_step,
            "own_step_p25_s": sum(p[1] for p in quartiles["p25"][policy]),
            "own_step_p75_s": sum(p[1] for p in quartiles["p75"][policy]),
            "own_edit_s": own_edit, "edit_s": edit, "share_edit": share_edit,
            "within_limit": share_edit <= LIMIT, "above_by": max(share_edit - LIMIT, 0.0),
            "pieces": {name: {"step_s": a, "edit_s": b} for name, a, b in parts}}
        row["why"] = _why(result, row, parts) if max(share_edit, share_step) > LIMIT else None
    return out


def _s(x: float) -> str:
    return f"{x:.3g}"


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def policy_table(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| family | size | policy | runs on | own work per step, s (median [p25–p75]) | step, s "
             "| share of a step | own work per edit, s | edit, s | share of the edit | ≤ 2 % of the edit |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for name, p in r["policies"].items():
            verdict = "yes" if p["within_limit"] else f"no: {_pct(p['above_by'])} above"
            lines.append(f"| {r['family']} | {r['size']}² | {name} | {p['runs_on']} | {_s(p['own_step_s'])} "
                         f"[{_s(p['own_step_p25_s'])}–{_s(p['own_step_p75_s'])}] | {_s(p['step_s'])} | "
                         f"{_pct(p['share_step'])} | {_s(p['own_edit_s'])} | {_s(p['edit_s'])} | "
                         f"{_pct(p['share_edit'])} | {verdict} |")
    return lines


def timing_table(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| family | size | measured | median, s | p25–p75 | min–max | n | times per edit |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for name, t in r["timings"].items():
            lines.append(f"| {r['family']} | {r['size']}² | {name} | {_s(t['median'])} | {_s(t['p25'])}–"
                         f"{_s(t['p75'])} | {_s(t['min'])}–{_s(t['max'])} | {t['n']} | "
                         f"{_times(r['per_edit'].get(name, '–'))} |")
    return lines


def _times(count: Any) -> str:
    if isinstance(count, dict):
        return ", ".join(f"{k} {v}" for k, v in count.items()) or "0"
    return str(count)


def machine_lines(doc: dict[str, Any]) -> list[str]:
    m = doc["machine"]
    lines = [f"Measured on the CPU (all of it, even where a GPU is present): {m.get('cpu')}, {m.get('cores')} "
             f"cores, {m.get('torch_threads')} torch thread(s); torch {m.get('torch')}, diffusers "
             f"{m.get('diffusers')}; {doc['dtype']}, random weights; 1-minute load average {m.get('load_start')} "
             f"before, {m.get('load_end')} after."]
    if doc.get("loaded"):
        lines.append("**The machine was loaded by other work (load average above half the cores): absolute "
                     "times include that contention; the shares compare times taken under the same load.**")
    return lines


def markdown(doc: dict[str, Any]) -> str:
    """`overheads.md`: the policy table, why a policy is above 2 %, every timing, the schedules, the machine."""
    tiny = doc["scale"] == "tiny"
    title = "# Policies' own work at real size"
    out = [title + (" (TINY configs: a test run, the numbers mean nothing)" if tiny else ""),
           "", *machine_lines(doc), "",
           "Step = one full step: the median time of one transformer block × the depth (FLUX.1-Kontext-dev: "
           "dual × 19 + single × 38; Qwen-Image-Edit: 60 blocks × 2 calls, true CFG) at the real token counts. "
           "Edit = steps × step (Kontext 28, Qwen 50: the transformer loop only, no text encoders or VAE, so the "
           "shares are upper bounds). Own work per edit = each piece × how often the policy's defaults run it "
           "(driven through the policies' own plan/observe). SpotEdit's partial steps at "
           f"{doc['active']:.0%} active noisy tokens.", "", *region_lines(doc), "", *policy_table(doc["results"]), ""]
    why = [f"- {r['family']} {r['size']}², {name}: {p['why']}."
           for r in doc["results"] for name, p in r["policies"].items() if p["why"]]
    if why:
        out += ["Above 2 % (of a step or of the edit), and why:", "", *why, ""]
    out += ["## Every timing", "", *timing_table(doc["results"]), "",
            "Blocks: forward of one block of each kind at the real token counts (noisy + source + text), timed by "
            "hooks around the block inside a call of the model built with one block of each kind. topi_stats_*: "
            "the statistics' own time (AttentionCollector.attend after the layer's one attention call, "
            "actors/attention_stats.py) on that layer's captured attention inputs. spotedit_selector: SpotEdit's observe with the editor's "
            "TimedScorer (SpotSelector, lpips_vae) per step; spotedit_first: its first call (also decodes the "
            "source). kv_full / kv_partial: SpotKV.assemble of one layer on a full / partial call. "
            "focus_partition / regione_partition: the policy's observe on its partitioning step with the editor's "
            "TimedScorer (cosine). kv_static / kv_static_all: SpotKV.assemble of one layer on a partial call with "
            "the static cache (no blend), the kept source keys / every source key.", ""]
    return "\n".join(out) + "\n"


def region_lines(doc: dict[str, Any]) -> list[str]:
    """What the focus and regione rows price, at which active share, and what they leave out."""
    regions, focus = doc["regions"], doc["regions"]["focus_params"]
    set_ = ", ".join(f"{k}={v}" for k, v in regions["focus"].items())
    keys = ("keeps every source key (reference_margin None), as regione does" if focus["reference_margin"] is None
            else f"keeps the source keys within a square of {regions['keys']:.0%} of the source (the region and "
                 f"its margin; reference_margin {focus['reference_margin']}), regione every one")
    return [(f"focus ({set_ + '; ' if set_ else ''}refresh {focus['refresh']}, final {focus['final']}) and regione "
             f"(its defaults) at {regions['active']:.0%} active noisy tokens (a centred square); focus {keys}. "
             "Their own work: the partition (the cosine score of x̂0 against the source, then focus's margin "
             "dilation / RegionE's erosion and dilation; focus once per partition: 1 + its refresh steps before a "
             "partial step, regione once per edit), the static K/V cache on every partial call and its fill on "
             f"every full call. Not priced: their temporal caches (focus's {focus['cache']}; regione's velocity "
             "decay, whose decision is a scalar comparison per call, `actors.caches.velocity_decay.decide`: "
             "negligible); caches only skip calls, so the K/V counts are upper bounds. RegionE's protocol is 28 "
             "steps (Kontext: full 0–5, 15, 26, 27); at Qwen's 50 its defaults give full 0–5, 15, 48, 49.")]


def per_edit(result: dict[str, Any]) -> dict[str, int | dict[str, int]]:
    """How many times each timed piece runs in one edit (the K/V cache's pieces: per policy that runs them)."""
    s, calls, depth, fam = result["schedule"], result["calls"], result["depth"], result["family"]
    layers = sum(depth.values())
    counts = {f"block_{kind}": s["steps"] * calls * n for kind, n in depth.items()}
    for kind in depth:
        n = sum(layer_kind(fam, layer, depth) == kind for layer in s["topi_layers"])
        counts[f"topi_stats_{kind}"] = s["topi_anchors"] * calls * n
    return {**counts, "topi_observe": s["topi_anchors"], "tokendrop_policy": s["tokendrop_masks"],
            "tokendrop_reg": s["tokendrop_pruned_steps"], "spotedit_first": 1,
            "spotedit_selector": s["spotedit_selector_calls"] - 1,
            "kv_partial": s["spotedit_partial_steps"] * layers * calls,
            "focus_partition": s["focus_partitions"], "regione_partition": s["regione_partitions"],
            **{kv: {p: s[f"{p}_partial_steps"] * layers * calls for p in ("focus", "regione")
                    if static_kv(result, p) == kv} for kv in ("kv_static", "kv_static_all")},
            "kv_full": {p: s[f"{p}_full_steps"] * layers * calls for p in ("spotedit", "focus", "regione")}}
