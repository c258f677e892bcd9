"""FLUX.2 [klein] 4B and klein KV 9B at real size: each policy's FLOP-ideal speedup as the cost model
(`costs/flops.py`) predicts it. A prediction of the FLOP model, not a measurement: no FLUX.2 weights were run.

`python -m bench.flux2_table [--steps 4] [--tokendrop-kept 0.036]` prints the Markdown table of
docs/benchmark.md ("FLUX.2 [klein] and klein KV"): 1024² and 2048², 1-4 reference images, 4 steps (klein's
default), for `full`, `random:ratio=0.5`, TokenDrop (omega 0.2, full_steps "25%"), Sparse Context (saliency, keep
0.25, warmup_steps "25%"), klein KV alone and klein KV with each of them.

Each policy's plan is written out here from its own rules (the step counts through its own parameter parsing):
random drops ⌈ratio·S⌉ of all S reference tokens from step 0, a new draw every step; TokenDrop keeps every token
for its full steps, then a mask over reference 1 only (the others stay whole), recomputed every step; Sparse
Context keeps ⌈keep·n⌉ of every reference after its warm-up, one fixed set. TokenDrop's kept share depends on the
edit (its threshold on |x̂0 − z_src|), so it is an assumption: by default the share of its paper's 2048² example
(FLUX.1-Kontext, 28 steps, the first 2 full, 89.5% of the tokens dropped on average: (2 + 26·k)/28 = 0.105,
k ≈ 3.6% kept on the pruned steps).

klein KV (actors/families/flux2/kv.py): a call whose kept reference rows are among those of the cache reads it
(the noisy tokens computed, the text and the kept references' cached keys attended to); any other call computes
its kept references and becomes the cache. So `full`, TokenDrop and Sparse Context extract once (step 0, every
row) and read the cache after; random extracts every step. The cost model prices an extracting call as a stock
one, although there the references attend to themselves only: `extract_overcount` says by how much."""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import policies
from actors.families.flux2.references import MAX_AREA
from costs import real
from costs.flops import Arch, call_flops, image_tokens, kept_per_reference, trace_flops
from policies.shares import steps_of

from .speed import parse_policy

KLEIN_4B, KLEIN_KV_9B = "FLUX.2-klein-4B", "FLUX.2-klein-9B"
SIZES, REFERENCES, STEPS = (1024, 2048), (1, 2, 3, 4), 4   # klein's model card: 4 steps
REFERENCE_SIDE = math.isqrt(MAX_AREA)   # references after the first: at ≤ 1024² area, whatever the edit size
TOKENDROP_KEPT = 0.036   # assumed kept share of reference 1 on TokenDrop's pruned steps (module docstring)
RANDOM = "random:ratio=0.5"
TOKENDROP = "tokendrop:omega=0.2,full_steps=25%"
SPARSE = "sparse_context:strategy=saliency,keep=0.25,warmup_steps=25%"
ALL = "all"   # the rows of a step that keeps every reference token


@dataclass(frozen=True)
class Planned:
    """One step of a plan: source tokens kept, and which rows (equal `rows` = the same set; ALL ⊇ any set)."""

    kept: int
    rows: Hashable


@dataclass(frozen=True)
class Step:
    """A step as `costs.flops` reads a StepTrace."""

    noisy: int
    total: int
    kept: int
    active: int | None = None
    keys: int | None = None
    from_layer: int = 0


def make_policy(label: str) -> Any:
    """The registered policy of a label, its parameters parsed and validated as `dropedit bench` does."""
    spec = parse_policy(label)
    return policies.make(spec.name, **spec.params)


def full_plan(refs: Sequence[int], steps: int) -> list[Planned]:
    return [Planned(sum(refs), ALL)] * steps


def random_plan(refs: Sequence[int], steps: int) -> list[Planned]:
    total, ratio = sum(refs), float(make_policy(RANDOM).ratio)
    return [Planned(total - math.ceil(ratio * total), ("random", i)) for i in range(steps)]


def tokendrop_plan(refs: Sequence[int], steps: int, kept_share: float = TOKENDROP_KEPT) -> list[Planned]:
    full = steps_of(make_policy(TOKENDROP).full_steps, steps)
    kept = math.ceil(kept_share * refs[0]) + sum(refs[1:])
    return [Planned(sum(refs), ALL)] * full + [Planned(kept, ("tokendrop", i)) for i in range(full, steps)]


def sparse_plan(refs: Sequence[int], steps: int) -> list[Planned]:
    policy = make_policy(SPARSE)
    warmup = steps_of(policy.warmup_steps, steps, minimum=1)
    kept = sum(kept_per_reference(refs, list(policy.keep)))
    return [Planned(sum(refs), ALL)] * warmup + [Planned(kept, "selected")] * (steps - warmup)


PLANS: dict[str, Callable[..., list[Planned]]] = {"full": full_plan, RANDOM: random_plan, TOKENDROP: tokendrop_plan,
                                                  SPARSE: sparse_plan}


def stock_trace(plan: Sequence[Planned], noisy: int, total: int) -> list[Step]:
    """The plan on klein: every step computes its kept reference tokens."""
    return [Step(noisy, total, p.kept) for p in plan]


def kv_trace(plan: Sequence[Planned], noisy: int, total: int) -> list[Step]:
    """The plan on klein KV: a step whose rows the cache holds reads it (as ReferenceKVReport records it:
    active = the noisy tokens, keys = noisy + kept); any other extracts and becomes the cache."""
    out, cache = [], None
    for p in plan:
        if cache is not None and (cache == ALL or cache == p.rows):
            out.append(Step(noisy, total, p.kept, active=noisy, keys=noisy + p.kept))
        else:
            out.append(Step(noisy, total, p.kept))
            cache = p.rows
    return out


def reference_tokens(size: int, count: int) -> list[int]:
    """Tokens of each reference: the first at the edit size, the others at ≤ 1024² area (as bench's images)."""
    return [image_tokens(size)] + [image_tokens(min(size, REFERENCE_SIDE))] * (count - 1)


def extract_overcount(arch: Arch, text: int, noisy: int, total: int) -> float:
    """FLOPs the cost model counts for an extracting call beyond what klein KV computes: its references attend to
    themselves only, not to the text and noisy keys (Q·Kᵀ and A·V, 2 FLOPs per multiply-add, every layer)."""
    return arch.num_layers * 2.0 * 2 * total * (text + noisy) * arch.dim


def priced_row(name: str, size: int, count: int, steps: int, kv: bool,
               tokendrop_kept: float = TOKENDROP_KEPT) -> dict[str, Any]:
    """One (architecture, size, reference count): every plan's FLOP-ideal speedup over the same steps on the
    stock pipeline with nothing dropped and nothing reused (klein KV: every plan run through its cache)."""
    priced = real(name)
    text, refs = priced.text(references=count), reference_tokens(size, count)
    noisy, total = image_tokens(size), sum(refs)
    build = kv_trace if kv else stock_trace
    speedups = {}
    for label, plan in PLANS.items():
        args = (tokendrop_kept,) if plan is tokendrop_plan else ()
        trace = build(plan(refs, steps, *args), noisy, total)
        speedups[label] = flops_speedup(priced.arch, trace, text, kv)
    row = {"arch": name, "kv": kv, "size": size, "references": count, "steps": steps, "text_tokens": list(text),
           "noisy_tokens": noisy, "reference_tokens": refs, "speedups": speedups,
           "full_step_tflop": sum(call_flops(priced.arch, t, noisy, total).total for t in text) / 1e12}
    if kv:   # the share of klein KV alone's FLOPs that its one extracting call is overcounted by
        alone = trace_flops(priced.arch, kv_trace(full_plan(refs, steps), noisy, total), text, True).total
        row["extract_overcount"] = extract_overcount(priced.arch, text[0], noisy, total) / alone
    return row


def flops_speedup(arch: Arch, trace: Sequence[Step], text: Sequence[int], kv: bool) -> float:
    """Stock FLOPs of the same steps ÷ the trace's; klein KV's cached calls compute no reference token."""
    stock = [Step(s.noisy, s.total, s.total) for s in trace]
    return trace_flops(arch, stock, text).total / trace_flops(arch, trace, text, source_cached=kv).total


def rows(steps: int = STEPS, tokendrop_kept: float = TOKENDROP_KEPT) -> list[dict[str, Any]]:
    return [priced_row(name, size, count, steps, kv, tokendrop_kept)
            for name, kv in ((KLEIN_4B, False), (KLEIN_KV_9B, True)) for size in SIZES for count in REFERENCES]


def _label(policy: str, kv: bool) -> str:
    short = {"full": "full", RANDOM: "random 0.5", TOKENDROP: "TokenDrop", SPARSE: "Sparse Context"}[policy]
    if not kv:
        return short
    return "klein KV alone" if policy == "full" else f"klein KV + {short}"


def markdown(table: list[dict[str, Any]], tokendrop_kept: float = TOKENDROP_KEPT) -> str:
    """Two tables (klein 4B; klein KV 9B), one line per size and reference count."""
    out = []
    for kv in (False, True):
        mine = [r for r in table if r["kv"] == kv]
        if not mine:
            continue
        labels = list(mine[0]["speedups"])
        out += [f"{mine[0]['arch']}{' (klein KV)' if kv else ''}, {mine[0]['steps']} steps, FLOP-ideal speedup over "
                "the stock pipeline (predicted by the FLOP model, not measured):", "",
                "| size | refs | text + noisy + reference tokens | full step, TFLOP | "
                + " | ".join(_label(p, kv) for p in labels) + (" | extract overcount |" if kv else " |"),
                "|---|---|---|---|" + "---|" * len(labels) + ("---|" if kv else "")]
        for r in mine:
            tokens = " + ".join([str(sum(r["text_tokens"])), str(r["noisy_tokens"]),
                                 "+".join(map(str, r["reference_tokens"]))])
            cells = " | ".join(f"{r['speedups'][p]:.2f}×" for p in labels)
            extra = f" | {100 * r['extract_overcount']:.1f}% |" if kv else " |"
            out.append(f"| {r['size']}² | {r['references']} | {tokens} | {r['full_step_tflop']:.0f} | {cells}{extra}")
        out.append("")
    out += [f"TokenDrop: {100 * tokendrop_kept:.1f}% of reference 1 kept on its pruned steps (an assumption: "
            "bench/flux2_table.py), the other references whole. Peak memory: the cost model (`costs/`) has no "
            "memory estimate, so none is predicted here; `bench/gpu.sh` measures peak GPU memory per edit."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.flux2_table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--tokendrop-kept", type=float, default=TOKENDROP_KEPT,
                   help="share of reference 1 TokenDrop keeps on its pruned steps (an assumption)")
    a = p.parse_args(argv)
    if a.steps < 1 or not 0 <= a.tokendrop_kept <= 1:
        p.error("--steps must be >= 1 and --tokendrop-kept within [0, 1]")
    print(markdown(rows(a.steps, a.tokendrop_kept), a.tokendrop_kept), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
