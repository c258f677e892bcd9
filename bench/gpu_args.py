"""What each run of `bench/gpu.sh` measures, and in which order: a model family at one size on the real
transformer config (actors/families/*/architecture.py) or, with smoke, on a tiny one; its forced plans
(bench/forced.py) and the registered policies as they decide; steps and repetitions; and the schedule of
edits that `bench.gpu_run` runs and `bench.gpu_budget` prices, the same list for both."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from actors.families.flux2.architecture import (
    FLUX2_KLEIN_4B_CONFIG,
    FLUX2_KLEIN_9B_CONFIG,
)
from actors.families.flux_kontext.architecture import (
    FLUX_KONTEXT_DEV_CONFIG as FLUX_KONTEXT_DEV,
)
from actors.families.qwen_image_edit.architecture import (
    QWEN_IMAGE_EDIT_CONFIG as QWEN_IMAGE_EDIT,
)
from costs.roofline import DEFAULT_DEVICE

# flux2: FLUX.2 [klein] 4B; flux2-kv: FLUX.2 [klein] KV at 9B, the size its checkpoint was released at
REAL = {"flux": FLUX_KONTEXT_DEV, "qwen": QWEN_IMAGE_EDIT, "flux2": FLUX2_KLEIN_4B_CONFIG,
        "flux2-kv": FLUX2_KLEIN_9B_CONFIG}
FLUX2 = ("flux2", "flux2-kv")
REFERENCES = {"flux2": 2, "flux2-kv": 2}   # FLUX.2 takes several reference images: the edited one and one more
EXEMPT = 10   # ToPi's default exempt layers on the real models: the forced Mode B routes from the same layer
# 8 steps: SpotEdit's 4 initial steps and Qwen TokenDrop's 4 full steps are followed by 4 pruned ones. FLUX.2
# [klein] keeps its distilled 4-step protocol (its schedules are shares of the trajectory).
STEPS = {"flux": 8, "qwen": 8, "flux2": 4, "flux2-kv": 4}
# FLUX.1 / Qwen from 2048²: the forced plans only (the registered policies decide as at 1024²), which prune from
# their first or second step: 4 steps time every kind of step they make (ToPi's anchors at 0 and 3)
FORCED_ONLY_FROM, FORCED_ONLY_STEPS = 2048, 4
REPS, POLICY_REPS = 3, 1   # forced plans and `full` (what the mechanisms' speed rests on), policies as they decide
# FLUX.2 has no paper setting for TokenDrop or Sparse Context (they refuse it without parameters): the
# settings the FLOP table of docs/benchmark.md prices (bench/flux2_table.py), shares of the 4 distilled steps
FLUX2_VARIANTS = ("tokendrop:omega=0.2,full_steps=25%", "sparse_context:strategy=saliency,keep=0.25,warmup_steps=25%")
# The device run, most important first: the papers' 1024² on both families, FLUX.1 at 2048² (where SpotEdit's
# and the selector's traffic grows most), FLUX.2 (issue 30), then Qwen at 2048² (the largest: its K/V caches and
# 41 GB of weights are the tightest fit on an 80 GB card). bench.gpu_budget drops runs from the end.
RUNS = (("flux", 1024), ("qwen", 1024), ("flux", 2048), ("flux2", 1024), ("flux2-kv", 1024), ("flux2", 2048),
        ("qwen", 2048))
SMOKE_RUNS = (("flux", 32), ("qwen", 32), ("flux2", 64))   # FLUX.2 refuses images under 64 px


@dataclass(frozen=True)
class Slot:
    """One edit of a run: its phase, its policy label, its repetition (None: the untimed warm-up) and its steps."""

    phase: str
    label: str
    rep: int | None
    steps: int


@dataclass(frozen=True)
class RunPlan:
    family: str
    size: int
    smoke: bool
    layers: int
    single_layers: int
    heads: int
    head_dim: int
    steps: int
    references: int
    forced: tuple[str, ...]
    policies: tuple[str, ...]
    reps: int = REPS
    policy_reps: int = POLICY_REPS

    @property
    def name(self) -> str:
        return f"{self.family}-{self.size}"

    def settings(self) -> dict[str, Any]:
        """What bench.json's `settings` holds for a `dropedit bench` run, for this run."""
        return {"model": self.family, "layers": self.layers, "single_layers": self.single_layers,
                "heads": self.heads, "head_dim": self.head_dim, "policies": [*self.forced, *self.policies],
                "sizes": [self.size], "steps": self.steps, "reps": self.reps, "policy_reps": self.policy_reps,
                "seed": 0, "threads": 1 if self.smoke else None, "references": [self.references],
                "device_model": DEFAULT_DEVICE, "smoke": self.smoke}


def forced_labels(family: str, from_layer: int) -> tuple[str, ...]:
    """The forced plans at the papers' operating points. FLUX.2 refuses ToPi's layer routing and SpotEdit's
    query skip (its family's `unsupported`): of the forced plans only the gather applies, and its own settings
    of TokenDrop and Sparse Context join (fixed settings too: timed with the forced plans)."""
    if family in FLUX2:
        return ("forced-gather:keep=0.5", *FLUX2_VARIANTS)
    return ("forced-gather:keep=0.5", f"forced-topi:keep=0.5,from_layer={from_layer}",
            f"forced-topi:keep=0.5,from_layer={from_layer},interval=3",
            "forced-spotedit:active=0.5", "forced-spotedit:active=0.2,selector=true")


def run_plan(family: str, size: int, smoke: bool = False) -> RunPlan:
    """The run of `family` at `size`: the real config's depth and width, or (smoke) a tiny 1 + 1-layer model."""
    import policies

    if family not in REAL:
        raise ValueError(f"family must be one of {', '.join(REAL)}, got {family!r}")
    if smoke:   # routing from layer 1 of 2
        layers, single, heads, head_dim, from_layer = 1, 1, 2, 16, 1
    else:
        config = REAL[family]
        layers, single = config["num_layers"], config.get("num_single_layers", 0)
        heads, head_dim, from_layer = config["num_attention_heads"], config["attention_head_dim"], EXEMPT
    registered, steps = tuple(name for name in policies.REGISTRY if name != "full"), STEPS[family]
    if family not in FLUX2 and size >= FORCED_ONLY_FROM and not smoke:
        registered, steps = (), FORCED_ONLY_STEPS
    return RunPlan(family, size, smoke, layers, single, heads, head_dim, steps, REFERENCES.get(family, 1),
                   _labels(forced_labels(family, from_layer)), _labels(registered))


def _labels(texts: Iterable[str]) -> tuple[str, ...]:
    """Labels as `bench.speed.PolicySpec.label` writes them (selector=true -> selector=True): the keys of the
    built policies and of the summary rows."""
    from .speed import parse_policy

    return tuple(parse_policy(t).label for t in texts)


def runs(smoke: bool = False) -> list[RunPlan]:
    return [run_plan(f, s, smoke) for f, s in (SMOKE_RUNS if smoke else RUNS)]


def by_name(name: str, smoke: bool = False) -> RunPlan:
    """A run by its name, `family-size` (e.g. flux2-kv-1024)."""
    family, _, size = name.rpartition("-")
    if not size.isdigit():
        raise ValueError(f"a run is named family-size (e.g. flux-1024), got {name!r}")
    return run_plan(family, int(size), smoke)


# the registry's model each family's run builds a tiny-encoder copy of (its family and pipeline class)
MODEL_OF = {"flux": "flux-kontext", "qwen": "qwen-image-edit", "flux2": "flux2-klein", "flux2-kv": "flux2-klein-kv"}


def refusals(plan: RunPlan) -> dict[str, str]:
    """The labels of the run that cannot be built or that the family refuses, with the reason (as
    `bench.speed.build_policies` finds them on the built pipeline), known before any model is built."""
    from actors.models import model

    from .forced import make
    from .speed import parse_policy

    spec = model(MODEL_OF[plan.family])
    out = {}
    for label in ("full", *plan.forced, *plan.policies):
        parsed = parse_policy(label)
        try:
            policy = make(parsed.name, **parsed.params)
        except (ValueError, TypeError) as err:
            out[label] = f"cannot be built: {err}"
            continue
        reason = spec.family.refusal(parsed.name, policy.needs, spec.pipeline.__name__)
        if reason:
            out[label] = f"refused: {reason}"
    return out


def warmup_steps(label: str, steps: int) -> int:
    """Steps of a label's warm-up: a forced plan's up to its second pruned step (every kind of step it makes:
    full, anchor, routed, partial after a selector's pick), `full`'s 2, a registered policy's all (it decides
    when to prune)."""
    from .forced import FORCED, make
    from .speed import parse_policy

    spec = parse_policy(label)
    if spec.name == "full":
        return min(steps, 2)
    if spec.name in FORCED:
        return min(steps, make(spec.name, **spec.params).full_steps + 2)
    return steps


def schedule(plan: RunPlan, skip: Iterable[str] = ()) -> list[Slot]:
    """The forced plans first (the mechanisms' own speed), then the policies as they decide. In each phase every
    label is warmed up once (an untimed edit; `full` once per run), then each repetition runs `full` and every
    label once, the order rotated by one per repetition (A/B as `dropedit bench` does). Repetitions are numbered
    across phases, so that each edit's A side is the `full` of its own repetition. `skip`: labels left out."""
    skip = set(skip)
    slots: list[Slot] = []
    warmed: set[str] = set()
    rep = 0
    for phase, labels, reps in (("forced", plan.forced, plan.reps), ("policies", plan.policies, plan.policy_reps)):
        labels = [label for label in labels if label not in skip]
        if not labels or reps < 1:
            continue
        order = ["full", *labels]
        slots += [Slot(phase, label, None, warmup_steps(label, plan.steps)) for label in order if label not in warmed]
        warmed.update(order)
        for _ in range(reps):
            shift = rep % len(order)
            slots += [Slot(phase, label, rep, plan.steps) for label in order[shift:] + order[:shift]]
            rep += 1
    return slots
