"""Forced plans: each mechanism timed while it really skips, at given ratios, on any model (random weights too).

The adaptive policies decide from what the model does; on a random-weight benchmark model SpotEdit skips
nothing and ToPi's defaults exempt more layers than the model has. The policies here replay the same kinds of
plan at fixed ratios through the same mechanisms (`dropedit bench --policy forced-spotedit:active=0.5`):

    forced-gather:keep=0.3                 source tokens gathered at the input (TokenDrop, random, Sparse Context)
    forced-topi:keep=0.5,from_layer=1      every token through the first K layers, the kept ones after (Mode B);
                                           interval=N adds ToPi's anchor steps (attention statistics, top-k keep)
    forced-spotedit:active=0.5             queries for the active noisy tokens only, the others and the source
                                           from SpotEdit's K/V cache (SpotFusion blend); selector=true scores
                                           every token with SpotSelector and activates the highest-scoring ones
    forced-focus:active=0.2                focus's partial steps: a square region gets queries, the rest and the
                                           source from the static K/V cache, source keys only near the region

They are not in `policies.REGISTRY` (the shipped policies, and the default benchmark list): `make` builds them
by name, and falls back to `policies.make` for every other name.
"""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field

import policies
from policies import CachedContext, Needs, Plan, Policy, PolicyRun, RunInfo, Seen, Step
from policies.params import Count, Fraction, Integer, PolicyError
from policies.base import STATIC_CONTEXT
from policies.spotedit import fusion_alpha
from policies.topi_select import token_scores, top_k_count, top_k_set


def random_mask(n: int, keep: float, generator: torch.Generator) -> torch.Tensor:
    """Exactly ⌈keep·n⌉ of n positions, chosen at random."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[: top_k_count(n, keep)]] = True
    return mask


class _ForcedRun(PolicyRun):
    """Full steps before `full_steps`, then the policy's forced plan."""

    def __init__(self, policy: Any, run: RunInfo) -> None:
        self.policy, self.run = policy, run
        self.generator = torch.Generator("cpu").manual_seed(run.seed * 1_000_003 + policy.seed)

    def applied(self) -> dict[str, Any]:
        return self.policy.params()


class _GatherRun(_ForcedRun):
    def plan(self, step: Step) -> Plan:
        if step.index < self.policy.full_steps:
            return Plan()
        keep = random_mask(self.run.num_source, self.policy.keep, self.generator)
        return Plan(keep_source=keep.to(self.run.device))


class ForcedGather(Policy):
    """⌈keep·S⌉ random source tokens enter the transformer (gathered at its input) after `full_steps`."""

    name: ClassVar[str] = "forced-gather"
    keep: Fraction = 0.5
    full_steps: Count = 0
    seed: Integer = 0

    def start(self, run: RunInfo) -> _GatherRun:
        return _GatherRun(self, run)


class _TopiRun(_ForcedRun):
    def __init__(self, policy: "ForcedTopi", run: RunInfo) -> None:
        super().__init__(policy, run)
        if not 0 < policy.from_layer < run.num_layers:
            raise PolicyError(f"from_layer={policy.from_layer} must be in 1..{run.num_layers - 1} on a "
                              f"{run.num_layers}-layer transformer")
        self.layers = (run.num_layers - 1,)   # ToPi's `last` representative layer
        self.keep: torch.Tensor | None = None

    def is_anchor(self, index: int) -> bool:
        return self.policy.interval > 0 and index % self.policy.interval == 0

    def plan(self, step: Step) -> Plan:
        if step.index < self.policy.full_steps:
            return Plan()
        if self.is_anchor(step.index):
            return Plan(attention_layers=self.layers)
        keep = self.keep if self.keep is not None else \
            random_mask(self.run.num_source, self.policy.keep, self.generator).to(self.run.device)
        return Plan(keep_source=keep, from_layer=self.policy.from_layer)

    def observe(self, step: Step, seen: Seen) -> None:
        if seen.attention:   # an anchor: ToPi's influence scores, its top-k selection at the forced ratio
            scores = token_scores(seen.attention, self.layers, "influence")
            self.keep = top_k_set(scores, self.policy.keep).to(self.run.device)


class ForcedTopi(Policy):
    """ToPi's Mode B at a fixed keep ratio: every token through the first `from_layer` layers, ⌈keep·S⌉ source
    tokens after. interval=0: random tokens, no anchor; interval=N: anchor steps every N steps (full context,
    attention statistics on the last layer) choose the top-k tokens by influence."""

    name: ClassVar[str] = "forced-topi"
    keep: Fraction = 0.5
    from_layer: Annotated[Integer, Field(ge=1)] = 1
    interval: Count = 0
    full_steps: Count = 0
    seed: Integer = 0

    @property
    def needs(self) -> Needs:  # type: ignore[override]
        return Needs(layer_routing=True, attention_stats=self.interval > 0)

    def start(self, run: RunInfo) -> _TopiRun:
        return _TopiRun(self, run)


class _SpotRun(_ForcedRun):
    def __init__(self, policy: "ForcedSpotEdit", run: RunInfo) -> None:
        super().__init__(policy, run)
        self.active: torch.Tensor | None = None   # chosen by the selector at the previous step
        self.final: torch.Tensor | None = None

    def plan(self, step: Step) -> Plan:
        if step.index < self.policy.full_steps:
            return Plan()
        active = self.active if self.active is not None else \
            random_mask(self.run.num_noisy, self.policy.active, self.generator)
        self.final = ~active
        context = dataclasses.replace(self.policy.needs.query_skip, alpha=fusion_alpha(step.sigma))
        return Plan(active_noisy=active.to(self.run.device), context=context)

    def observe(self, step: Step, seen: Seen) -> None:
        if self.policy.selector and step.index + 1 >= self.policy.full_steps and step.index + 1 < self.run.steps:
            scores = self.run.token_scores(seen.x0, "lpips_vae")   # SpotSelector; the most changed get queries
            self.active = top_k_set(scores.float().cpu(), self.policy.active)

    def replace_with_source(self) -> torch.Tensor | None:
        return self.final


class ForcedSpotEdit(Policy):
    """SpotEdit's partial steps at a fixed active ratio after `full_steps` full ones (≥ 1: they fill the K/V
    cache): ⌈active·N⌉ noisy tokens get queries, the others and the source tokens come from the cache,
    blended toward the source with α(t) (SpotFusion); the inactive ones are replaced by the source at the end.
    selector=true runs SpotSelector every step and activates the highest-scoring tokens (its cost timed)."""

    name: ClassVar[str] = "forced-spotedit"
    active: Fraction = 0.5
    full_steps: Annotated[Integer, Field(ge=1)] = 1
    selector: bool = False
    condition_cache: bool = True
    seed: Integer = 0

    @property
    def needs(self) -> Needs:  # type: ignore[override]
        return Needs(query_skip=CachedContext(noisy=True, source=self.condition_cache, fusion=True),
                     token_scores=self.selector)

    def start(self, run: RunInfo) -> _SpotRun:
        return _SpotRun(self, run)


class _FocusRun(_ForcedRun):
    def __init__(self, policy: "ForcedFocus", run: RunInfo) -> None:
        super().__init__(policy, run)
        side = max(1, round((policy.active * run.num_noisy) ** 0.5))   # one square region, as an edit's
        grid = torch.zeros(run.noisy_grid, dtype=torch.bool)
        grid[:side, :side] = True
        self.active = grid.flatten()
        near = torch.zeros(run.noisy_grid, dtype=torch.bool)
        near[: side + policy.reference_margin, : side + policy.reference_margin] = True
        rest = run.num_source - run.num_noisy
        self.keys = torch.cat([near.flatten(), torch.ones(rest, dtype=torch.bool)])

    def plan(self, step: Step) -> Plan:
        if step.index < self.policy.full_steps:
            return Plan(refreshes_context=step.index == self.policy.full_steps - 1)
        return Plan(active_noisy=self.active.to(self.run.device), context=_STATIC,
                    keep_source=self.keys.to(self.run.device))


_STATIC = STATIC_CONTEXT


class ForcedFocus(Policy):
    """focus's partial steps at a fixed region after `full_steps` full ones: a square of ⌈active·N⌉ noisy tokens
    gets queries, the frozen ones and the source come from the static K/V cache, and only the source tokens
    within `reference_margin` of the region stay keys (its temporal cache is left out: a skipped call costs
    nothing to time)."""

    name: ClassVar[str] = "forced-focus"
    active: Fraction = 0.2
    reference_margin: Count = 2
    full_steps: Annotated[Integer, Field(ge=1)] = 1
    seed: Integer = 0

    @property
    def needs(self) -> Needs:  # type: ignore[override]
        return Needs(query_skip=_STATIC)

    def start(self, run: RunInfo) -> _FocusRun:
        return _FocusRun(self, run)


FORCED: dict[str, type[Policy]] = {cls.name: cls for cls in (ForcedGather, ForcedTopi, ForcedSpotEdit, ForcedFocus)}


def make(name: str, **params: Any) -> Policy:
    """A forced policy by name, else `policies.make` (unknown names raise PolicyError naming both lists)."""
    if name in FORCED:
        return FORCED[name](**params)
    if name not in policies.REGISTRY:
        raise PolicyError(f"unknown policy {name!r}; accepted: {', '.join(sorted([*policies.REGISTRY, *FORCED]))}")
    return policies.make(name, **params)
