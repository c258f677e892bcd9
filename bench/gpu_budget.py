"""The device run's time budget, predicted before it starts: every edit of every run's schedule
(`bench.gpu_args.schedule`, warm-ups included) priced on the real architecture of its family by the roofline
(`costs.roofline.trace_time` on the named GPU), FLUX.2 by its FLOPs at the bf16 peak (the roofline does not
model FLUX.2's blocks). Runs are dropped from the least important (the end of `bench.gpu_args.RUNS`) until
their predictions, each with a start-up allowance, fit the whole budget; each run's cap is MARGIN × its
prediction + the allowance (bench/gpu.sh also clamps it to the time left, so that a slower GPU cuts the last
runs short rather than the summary: every finished edit is on disk by then).

Forced plans are priced by the plan they force; the registered policies as `full` (on random weights they
decide what they decide: an upper bound, dropping only lowers it; their own overhead is not in it). Every
figure here is a prediction (peaks as published, no launch latency): the caps' margin is what covers the
difference. `python -m bench.gpu_budget [--smoke] [--runs A,B] [--budget-s S] [--reserve-s S] [--json PATH]`
prints the table on stderr and one `name predicted needed cap` line per run to start on stdout (what
bench/gpu.sh reads: needed = predicted + start-up allowance; seconds)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from typing import Any

from costs import flops, roofline
from costs.architectures import real
from costs.kernels import modelled

from .forced import ForcedGather, ForcedSpotEdit, ForcedTopi, make
from .gpu_args import RunPlan, Slot, by_name, refusals, runs, schedule
from .speed import parse_policy

# the real architecture each family's run stands for (klein KV at 9B, the size its checkpoint was released at)
OWN = {"flux": "FLUX.1-Kontext-dev", "qwen": "Qwen-Image-Edit", "flux2": "FLUX.2-klein-4B",
       "flux2-kv": "FLUX.2-klein-9B"}
MARGIN = 2.0      # cap = MARGIN × predicted + STARTUP_S: the roofline is a lower bound at published peaks
STARTUP_S = 30.0  # an allowance, not a measurement: imports, CUDA context, the random model built on the GPU
                  # (each run's measured start-up is in its edits.jsonl lines: startup_s)
BUDGET_S = 570.0  # the device machine's 10-minute command, less 30 s for the environment and the summary
REFERENCE_SIZE = 1024   # references after the first are encoded at ~1024² area at most (FLUX.2, Edit-Plus)


@dataclass(frozen=True)
class PlannedStep:
    """A step as costs.roofline reads a StepTrace."""

    index: int
    noisy: int
    total: int
    kept: int
    from_layer: int = 0
    active: int | None = None
    keys: int | None = None


def planned_trace(label: str, noisy: int, source: int, steps: int,
                  num_layers: int) -> tuple[list[PlannedStep], dict[str, Any]]:
    """The steps a forced plan makes (a registered policy: every token), and trace_time's keyword arguments."""
    spec = parse_policy(label)
    policy = make(spec.name, **spec.params) if spec.name.startswith("forced-") else None
    full = [PlannedStep(i, noisy, source, source) for i in range(steps)]
    if isinstance(policy, ForcedGather):
        kept = _count(source, policy.keep)
        return [s if s.index < policy.full_steps else PlannedStep(s.index, noisy, source, kept) for s in full], {}
    if isinstance(policy, ForcedTopi):
        anchors = {s.index for s in full if policy.interval and s.index % policy.interval == 0}
        routed = [s if s.index < policy.full_steps or s.index in anchors
                  else PlannedStep(s.index, noisy, source, _count(source, policy.keep), policy.from_layer)
                  for s in full]
        return routed, {"stats": {i: (num_layers - 1,) for i in anchors}}
    if isinstance(policy, ForcedSpotEdit):
        active = _count(noisy, policy.active)
        partial = [s if s.index < policy.full_steps else PlannedStep(s.index, noisy, source, source, active=active)
                   for s in full]
        return partial, {"source_cached": policy.condition_cache}
    return full, {}


def _count(n: int, keep: float) -> int:
    from policies.topi_select import (
        top_k_count,  # ⌈keep·n⌉ exactly as the forced plans take it
    )
    return top_k_count(n, keep)


def edit_seconds(plan: RunPlan, label: str, steps: int,
                 device: str = roofline.DEFAULT_DEVICE) -> tuple[float, str]:
    """Predicted seconds of one `steps`-step edit of `label` in `plan`'s run on the real architecture, and how
    it was priced."""
    priced = real(OWN[plan.family])
    noisy = flops.image_tokens(plan.size)
    source = noisy + (plan.references - 1) * flops.image_tokens(min(plan.size, REFERENCE_SIZE))
    trace, kwargs = planned_trace(label, noisy, source, steps, priced.arch.num_layers)
    text = priced.text(plan.references)
    if modelled(priced.arch):
        return roofline.trace_time(priced.arch, trace, text, dev=device, **kwargs), "roofline"
    work = flops.trace_flops(priced.arch, trace, text, kwargs.get("source_cached", False)).total
    return work / roofline.device(device).bf16_flops, "FLOPs at bf16 peak"


@dataclass(frozen=True)
class RunBudget:
    name: str
    architecture: str
    method: str
    edits: int          # timed edits
    warmups: int
    steps: int
    predicted_s: float  # every edit of the schedule, warm-ups included (prediction)
    cap_s: int          # MARGIN × predicted + STARTUP_S, rounded up


def run_budget(plan: RunPlan, slots: list[Slot] | None = None, device: str = roofline.DEFAULT_DEVICE) -> RunBudget:
    slots = schedule(plan, refusals(plan)) if slots is None else slots
    priced = {key: edit_seconds(plan, *key, device) for key in dict.fromkeys((s.label, s.steps) for s in slots)}
    predicted = sum(priced[s.label, s.steps][0] for s in slots)
    methods = sorted({m for _, m in priced.values()})
    return RunBudget(plan.name, OWN[plan.family], ", ".join(methods), sum(s.rep is not None for s in slots),
                     sum(s.rep is None for s in slots), plan.steps, predicted,
                     math.ceil(MARGIN * predicted + STARTUP_S))


def needed_s(budget: RunBudget) -> float:
    """What a run is predicted to take: its edits and the start-up allowance."""
    return budget.predicted_s + STARTUP_S


def fit(budgets: list[RunBudget], total_s: float) -> tuple[list[RunBudget], list[RunBudget]]:
    """(kept, dropped): the least important runs (the last) dropped until the predictions fit `total_s`."""
    kept = list(budgets)
    while kept and sum(needed_s(b) for b in kept) > total_s:
        kept.pop()
    return kept, budgets[len(kept):]


def table(kept: list[RunBudget], dropped: list[RunBudget], total_s: float, device: str) -> str:
    lines = [(f"bench/gpu.sh budget on {device}, PREDICTED (roofline; FLUX.2: FLOPs at peak): each run's edits "
              f"+ {STARTUP_S:.0f} s start-up allowance must fit {total_s:.0f} s; cap = {MARGIN:g} × predicted + "
              f"{STARTUP_S:.0f} s"),
             (f"{'run':<16}{'priced as':<22}{'method':<20}{'edits':>6}{'warm-ups':>9}{'steps':>6}"
              f"{'predicted s':>12}{'cap s':>7}")]
    for b in kept + dropped:
        mark = "" if b in kept else "  DROPPED: does not fit"
        lines.append(f"{b.name:<16}{b.architecture:<22}{b.method:<20}{b.edits:>6}{b.warmups:>9}{b.steps:>6}"
                     f"{b.predicted_s:>12.1f}{b.cap_s:>7}{mark}")
    lines.append(f"{'total kept':<79}{sum(b.predicted_s for b in kept):>12.1f}{sum(b.cap_s for b in kept):>7}")
    lines.append(f"predicted with start-up: {sum(needed_s(b) for b in kept):.0f} s of {total_s:.0f} s")
    return "\n".join(lines)


def plans(smoke: bool, names: list[str] | None) -> list[RunPlan]:
    """The runs: `names` in their order (any family-size), else bench.gpu_args.RUNS (smoke: SMOKE_RUNS)."""
    return [by_name(n, smoke) for n in names] if names else runs(smoke)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_budget", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="the tiny CPU runs, a fixed cap each (not predicted); "
                                                        "the GPU runs' table is printed all the same")
    p.add_argument("--smoke-cap-s", type=int, default=300)
    p.add_argument("--runs", default="", help="comma-separated run names (family-size) instead of the default list")
    p.add_argument("--budget-s", type=float, default=BUDGET_S, help="the whole device run's seconds")
    p.add_argument("--reserve-s", type=float, default=0.0, help="seconds kept for a later step (--train-toy)")
    p.add_argument("--device-model", default=roofline.DEFAULT_DEVICE, choices=list(roofline.DEVICES))
    p.add_argument("--json", default=None, help="write the budget here")
    a = p.parse_args(argv)
    total = a.budget_s - a.reserve_s
    names = [n.strip() for n in a.runs.split(",") if n.strip()] or None
    kept, dropped = fit([run_budget(plan, device=a.device_model) for plan in plans(False, names)], total)
    text = table(kept, dropped, total, a.device_model)
    print(text, file=sys.stderr)
    if a.smoke:   # the tiny CPU runs: not predicted, a fixed cap each
        chosen = [{"name": plan.name, "predicted_s": None, "needed_s": 0, "cap_s": a.smoke_cap_s}
                  for plan in plans(True, names)]
    else:
        chosen = [{"name": b.name, "predicted_s": b.predicted_s, "needed_s": math.ceil(needed_s(b)),
                   "cap_s": b.cap_s} for b in kept]
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": chosen, "smoke": a.smoke, "prediction": {
                "device": a.device_model, "budget_s": total, "margin": MARGIN, "startup_allowance_s": STARTUP_S,
                "kept": [asdict(b) for b in kept], "dropped": [asdict(b) for b in dropped], "table": text}}, f,
                indent=1)
    print("\n".join(f"{r['name']} {r['predicted_s'] or 0:.0f} {r['needed_s']} {r['cap_s']}" for r in chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
