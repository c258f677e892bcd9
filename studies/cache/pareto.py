"""Pareto frontier and verdicts of the cache study (`studies.cache.run`), computed from its aggregated rows so that
the prose follows the numbers. A row is a dict with at least `config`, `family` (full | cache | pruning |
cache+pruning | peer), the quality columns (`psnr_full`, `psnr_target`: higher is better; an identical edit is
inf) and the speed columns (`flop_speedup`, `measured_speedup`); rows with a `reason` (a peer that cannot run
here) are left out of every verdict.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

Row = dict[str, Any]
TOLERANCE = 0.05   # "at that speed": at least 95 % of it
SINGLE = ("cache", "pruning", "peer")   # one method each (a peer: cache-dit's DBCache, with its TaylorSeer or not)


def measured(rows: Iterable[Row]) -> list[Row]:
    """The rows with numbers (not the peers that could not run)."""
    return [r for r in rows if not r.get("reason")]


def pareto_frontier(rows: Sequence[Row], speed: str, quality: str) -> list[Row]:
    """The rows no other row beats on both axes (at least as fast and at least as good, better on one), sorted by
    speed. Ties (same speed and quality) are all kept."""
    pts = [r for r in measured(rows) if not math.isnan(float(r[speed])) and not math.isnan(float(r[quality]))]

    def dominated(r: Row) -> bool:
        return any(o[speed] >= r[speed] and o[quality] >= r[quality]
                   and (o[speed] > r[speed] or o[quality] > r[quality]) for o in pts)

    return sorted((r for r in pts if not dominated(r)), key=lambda r: (r[speed], -r[quality]))


def best_at_speed(rows: Iterable[Row], speed: str, quality: str, at_least: float) -> Row | None:
    """The best-quality row at least `at_least` fast (None if none is)."""
    fast = [r for r in measured(rows) if r[speed] >= at_least]
    return max(fast, key=lambda r: r[quality]) if fast else None


def _fmt(q: float) -> str:
    return "identical" if q == math.inf else f"{q:.1f} dB"


def _margin(a: float, b: float) -> float:
    return 0.0 if a == b else a - b   # inf − inf is an equality here, not NaN


def composition_verdict(rows: Sequence[Row], speed: str, quality: str, target: float = 2.5,
                        tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Does a composition (cache+pruning) reach `target`× at quality no worse than the best single method at that
    speed? "At that speed": at least (1 − `tolerance`) of the composition's speed, or of the fastest single
    method's where the composition is faster than every one (a composition must not win by being uncontested
    while a slightly slower single method is much better). `margin`: the best composition's quality minus that
    single method's (≥ 0: it does); when no composition reaches `target`, `shortfall` is the speed it lacks."""
    rows = measured(rows)
    singles = [r for r in rows if r["family"] in SINGLE]
    fastest = max((r[speed] for r in singles), default=0.0)
    fast = [r for r in rows if r["family"] == "cache+pruning" and r[speed] >= target]
    if not fast:
        comps = [r for r in rows if r["family"] == "cache+pruning"]
        top = max(comps, key=lambda r: r[speed], default=None)
        return {"ok": False, "composition": top, "single": None, "margin": None,
                "shortfall": target - top[speed] if top else target}
    scored = []
    for c in fast:
        s = best_at_speed(singles, speed, quality, min(c[speed], fastest) * (1 - tolerance))
        scored.append((math.inf if s is None else _margin(c[quality], s[quality]), c, s))
    margin, comp, single = max(scored, key=lambda t: (t[0], t[1][quality]))
    floor = min(comp[speed], fastest) * (1 - tolerance)
    # context: the fastest single method on the singles' frontier just below that speed
    below = max((r for r in pareto_frontier(singles, speed, quality) if r[speed] < floor),
                key=lambda r: r[speed], default=None)
    return {"ok": margin >= 0, "composition": comp, "single": single, "margin": margin, "shortfall": 0.0,
            "slower": below}


def composes(rows: Sequence[Row], parts: dict[str, tuple[str, str]], speed: str, quality: str) -> list[dict]:
    """Each composition against its two parts (the policy alone, the cache alone): `speed_gain` over the faster
    part, `vs_better` / `vs_worse`: its quality minus the better / worse part's, `composes`: faster than both
    parts and no part at least as fast and as good (it adds a point neither part gives)."""
    by = {r["config"]: r for r in measured(rows)}
    out = []
    for config, (policy, cache) in parts.items():
        if config not in by or policy not in by or cache not in by:
            continue
        c, ps = by[config], (by[policy], by[cache])
        faster = max(p[speed] for p in ps)
        dominated = any(p[speed] >= c[speed] and p[quality] >= c[quality] for p in ps)
        out.append({"config": config, "speed_gain": c[speed] / faster,
                    "vs_better": _margin(c[quality], max(p[quality] for p in ps)),
                    "vs_worse": _margin(c[quality], min(p[quality] for p in ps)),
                    "composes": c[speed] > faster and not dominated})
    return out


def peer_vs_ours(rows: Sequence[Row], speed: str, quality: str) -> list[dict[str, Any]]:
    """Each peer that ran against our best cache alone (policy full) at least as fast: `margin` = ours − peer
    (> 0: ours is better at matched speed); `ours` None where no cache of ours is that fast."""
    rows = measured(rows)
    ours = [r for r in rows if r["family"] == "cache"]
    out = []
    for p in (r for r in rows if r["family"] == "peer"):
        o = best_at_speed(ours, speed, quality, p[speed])
        out.append({"peer": p, "ours": o, "margin": None if o is None else _margin(o[quality], p[quality])})
    return out


# ---- the verdicts as Markdown bullets ------------------------------------------------------------------------------
SPEED_NAMES = {"flop_speedup": "FLOP-ideal (Kontext-dev, toy tokens)",
               "flop_1024": "FLOP-ideal (Kontext-dev, 1024² projected)", "measured_speedup": "measured (wall)",
               "cpu_speedup": "measured (CPU time)"}
QUALITY_NAMES = {"psnr_target": "PSNR vs target", "psnr_full": "PSNR vs full"}


def composition_text(rows: Sequence[Row], speed: str, quality: str, target: float = 2.5) -> str:
    v = composition_verdict(rows, speed, quality, target)
    head = (f"- **{QUALITY_NAMES[quality]}, {SPEED_NAMES[speed]}**: a composition reaches ≥ {target}× at quality "
            f"no worse than the best single method at that speed: **{'yes' if v['ok'] else 'no'}**")
    c, s = v["composition"], v["single"]
    if c is None:
        return head + " (no composition was measured)."
    if v["shortfall"] > 0:
        return head + f" (no composition reaches {target}×; the fastest, `{c['config']}`, " \
                      f"is {c[speed]:.2f}×, {v['shortfall']:.2f}× short)."
    if s is None:
        return head + f" (`{c['config']}`: {c[speed]:.2f}×, {_fmt(c[quality])}; no single method was measured)."
    verb = "ahead of" if v["margin"] >= 0 else "behind"
    b = v.get("slower")
    context = "" if b is None or b[quality] <= c[quality] else \
        f"; just below that speed a single method is better: `{b['config']}`, {b[speed]:.2f}×, {_fmt(b[quality])}"
    return head + f" (best case `{c['config']}`: {c[speed]:.2f}×, {_fmt(c[quality])}, {abs(v['margin']):.2f} dB " \
                  f"{verb} `{s['config']}`: {s[speed]:.2f}×, {_fmt(s[quality])}{context})."


def composes_text(rows: Sequence[Row], parts: dict[str, tuple[str, str]], speed: str, quality: str) -> str:
    res = composes(rows, parts, speed, quality)
    name = f"({QUALITY_NAMES[quality]}, {SPEED_NAMES[speed]})"
    if not res:
        return f"- **Caching composes with pruning** {name}: no composition measured."
    by_policy: dict[str, list[dict]] = {}
    for r in res:
        by_policy.setdefault(parts[r["config"]][0].rstrip("|"), []).append(r)
    per = "; ".join(f"`{p}` {sum(x['composes'] for x in v)}/{len(v)} (speed ×{_span([x['speed_gain'] for x in v])} "
                    f"the faster part's, quality {_range([x['vs_worse'] for x in v])} dB vs the worse part)"
                    for p, v in by_policy.items())
    ok = sum(r["composes"] for r in res)
    return (f"- **Caching composes with pruning** {name}: {ok} of {len(res)} compositions are faster than both "
            f"their parts and dominated by neither. Per policy: {per}.")


def _span(values: list[float]) -> str:
    return f"{min(values):.2f}" if max(values) - min(values) < 0.005 else f"{min(values):.2f}–{max(values):.2f}"


def _range(values: list[float]) -> str:
    values = [v for v in values if math.isfinite(v)]
    return "n/a" if not values else f"{min(values):+.1f} to {max(values):+.1f}"


def peer_text(rows: Sequence[Row], speed: str, quality: str) -> str:
    parts = []
    for v in peer_vs_ours(rows, speed, quality):
        p, o = v["peer"], v["ours"]
        if o is None:
            parts.append(f"`{p['config']}` ({p[speed]:.2f}×, {_fmt(p[quality])}): no cache of ours is that fast")
        else:
            word = "better" if v["margin"] > 0 else ("equal" if v["margin"] == 0 else "worse")
            parts.append(f"`{p['config']}` ({p[speed]:.2f}×, {_fmt(p[quality])}) vs our `{o['config']}` "
                         f"({o[speed]:.2f}×, {_fmt(o[quality])}): ours {abs(v['margin']):.1f} dB {word}")
    return (f"- **cache-dit vs our caches at matched speed** ({QUALITY_NAMES[quality]}, {SPEED_NAMES[speed]}): "
            + ("; ".join(parts) if parts else "no peer ran") + ".")
