"""The engine's mechanisms: what a plan may use beyond gathering source tokens at the transformer's input.

A policy declares the mechanisms its plans use (`Policy.needs`), a temporal cache among them; the editor
installs those, and only those, for one edit. Each step, every installed mechanism turns its part of the plan
into what the transformer call does (`before_call`), may post-process the velocity and report what happened
(`after_call`), and may change the final latent (`finish`). The step loop only iterates over them: a new
mechanism is a class here (its technique in a file of its own), a field of `Needs`, and a line in
`mechanisms_for`. A temporal cache (`actors.caches`) is one too: its spec builds it (`spec.mechanism(edit)`),
whether the policy's `needs.cache` or the edit's configuration asked for it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ContextManager, Protocol

import numpy as np
import torch

from policies import Needs, Plan, PolicyRun, RunInfo

from .active_noisy import ActiveNoisy
from .adapter import EditInputs
from .attention_stats import AttentionCollector, collecting_attention
from actors.edit_result import CacheCall
from .routing import Routing


@dataclass(frozen=True)
class EditContext:
    """What a mechanism may know about the edit it is built for."""

    run: RunInfo
    needs: Needs
    transformer: torch.nn.Module
    inputs: EditInputs
    routing: Routing
    policy_run: PolicyRun
    kv_store: str = "compute"   # SpotEdit's K/V buffers: the compute dtype or "int8" (actors.kv_int8)


@dataclass
class StepCall:
    """One step's plan as the transformer call runs it; mechanisms fill in their part."""

    plan: Plan
    kept: torch.Tensor | None          # source rows in the context (ascending); None = every source token
    input_index: torch.Tensor | None   # source rows the adapter gathers at the input; None = all (or routed)
    index: int                         # the step
    from_layer: int = 0                # layers before it saw every source token
    attention: dict[int, Any] = field(default_factory=dict)   # layer -> LayerStats, when asked for
    selector_seconds: float = 0.0      # token scoring inside the transformer call
    active: int | None = None          # noisy tokens with queries; None = all
    keys: int | None = None            # image tokens every layer attended to; None = all
    active_mask: np.ndarray | None = None
    cache_calls: tuple[CacheCall, ...] = ()   # one per transformer call, when a temporal cache ran


class Mechanism:
    """No-op defaults; a mechanism overrides what it does."""

    uses_routing = False   # needs the per-block routing hooks (actors.routing)
    # attached before the adapter's and the routing hooks, so that its own block hooks sit inside them and see
    # the rows routing chose (a temporal cache); the others attach after them
    attaches_first = False

    def attached(self) -> ContextManager[Any]:
        return contextlib.nullcontext()

    def before_call(self, call: StepCall) -> None:
        return None

    def after_call(self, call: StepCall, v: torch.Tensor) -> torch.Tensor:
        return v

    def finish(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def result_notes(self) -> list[str]:
        return []   # what the edit's result should say about this mechanism

    def result_fields(self) -> dict[str, Any]:
        return {}   # `EditResult` fields this mechanism fills (a cache: cache_params, cache_summary)


class MechanismSpec(Protocol):
    """A validated, frozen description that builds a mechanism for one edit (a temporal cache's spec)."""

    def mechanism(self, edit: EditContext) -> Mechanism: ...


class LayerRouting(Mechanism):
    """ToPi's Mode B: every token through the first `plan.from_layer` layers, the kept ones after."""

    uses_routing = True

    def __init__(self, routing: Routing, num_noisy: int) -> None:
        self.routing, self.num_noisy = routing, num_noisy

    def before_call(self, call: StepCall) -> None:
        if call.kept is None or call.plan.from_layer <= 0:
            return
        noisy = torch.arange(self.num_noisy, device=call.kept.device)
        self.routing.set(torch.cat([noisy, call.kept + self.num_noisy]), call.plan.from_layer, call.plan.merge)
        call.input_index, call.from_layer = None, call.plan.from_layer


class AttentionStats(Mechanism):
    """Attention statistics on the layers a plan asks for (ToPi's scores, attention-based selection)."""

    def __init__(self, transformer: torch.nn.Module, family: str, num_noisy: int) -> None:
        self.transformer, self.family = transformer, family
        self.collector = AttentionCollector(num_noisy=num_noisy)

    def attached(self) -> ContextManager[Any]:
        return collecting_attention(self.transformer, self.family, self.collector)

    def before_call(self, call: StepCall) -> None:
        self.collector.request(call.plan.attention_layers)

    def after_call(self, call: StepCall, v: torch.Tensor) -> torch.Tensor:
        call.attention, seconds = self.collector.take()
        call.selector_seconds += seconds
        return v


class QuerySkip(Mechanism):
    """SpotEdit: queries only for the active noisy tokens, the others from a K/V cache; the policy's
    final replacement by the source latent."""

    uses_routing = True

    def __init__(self, transformer: torch.nn.Module, family: str, inputs: EditInputs, needs: Needs,
                 routing: Routing, policy_run: PolicyRun, kv_store: str = "compute") -> None:
        self.spot = ActiveNoisy(transformer, family, inputs, needs.query_skip, kv_store=kv_store)
        self.routing, self.policy_run = routing, policy_run
        self.aligned, self.grid = inputs.aligned_source, inputs.noisy_grid

    def attached(self) -> ContextManager[Any]:
        return self.spot.attached()

    def before_call(self, call: StepCall) -> None:
        if self.spot.route(call.plan, self.routing, call.kept, self.aligned.device):
            call.input_index = None   # active noisy tokens (and their positions) are gathered from layer 0

    def after_call(self, call: StepCall, v: torch.Tensor) -> torch.Tensor:
        call.active, call.keys = self.spot.active, self.spot.keys
        call.active_mask = self.spot.active_mask(self.grid)
        return self.spot.velocity(v)

    def finish(self, z: torch.Tensor) -> torch.Tensor:
        return self.spot.replace(z, self.aligned, self.policy_run.replace_with_source())


class ReferenceKVReport(Mechanism):
    """What an adapter that reuses the reference K/V (FLUX.2 [klein] KV: `inputs.cond["reference_kv"]`) did at
    each call, for the trace and the cost model: a call that read the cache computed the noisy tokens only and
    attended to the kept references' cached keys."""

    def __init__(self, inputs: EditInputs) -> None:
        self.state = inputs.cond["reference_kv"]
        self.num_noisy = int(inputs.latents.shape[1])

    def after_call(self, call: StepCall, v: torch.Tensor) -> torch.Tensor:
        if self.state.last_cached:
            kept = self.state.num_source if call.kept is None else int(call.kept.numel())
            call.active, call.keys = self.num_noisy, self.num_noisy + kept
        return v

    def result_notes(self) -> list[str]:
        return [f"reference K/V computed in {self.state.extracts} call(s), read from the cache in "
                f"{self.state.cached_calls}"]

    def result_fields(self) -> dict[str, Any]:
        return {"source_cached": True}


def mechanisms_for(edit: EditContext, cache: MechanismSpec | None = None,
                   buckets: MechanismSpec | None = None) -> list[Mechanism]:
    """The mechanisms of one edit in the order they configure a call: shape bucketing (`actors.shape_buckets`,
    when on: it rounds the plan every other one reads), the temporal cache (if any), then the ones the policy's
    plans use."""
    needs, transformer, family, inputs = edit.needs, edit.transformer, edit.run.family, edit.inputs
    out: list[Mechanism] = [] if buckets is None or not getattr(buckets, "on", True) else [buckets.mechanism(edit)]
    out += [] if cache is None else [cache.mechanism(edit)]
    num_noisy = inputs.latents.shape[1]
    if needs.layer_routing:
        out.append(LayerRouting(edit.routing, num_noisy))
    if needs.query_skip is not None:
        out.append(QuerySkip(transformer, family, inputs, needs, edit.routing, edit.policy_run, edit.kv_store))
    if needs.attention_stats:
        out.append(AttentionStats(transformer, family, num_noisy))
    if "reference_kv" in inputs.cond:
        out.append(ReferenceKVReport(inputs))
    return out


def check_plan(plan: Plan, needs: Needs, policy: str) -> None:
    """A plan may only use what its policy declared: anything else would be silently ignored."""
    uses = (("layer_routing", plan.from_layer > 0, needs.layer_routing),
            ("attention_stats", bool(plan.attention_layers), needs.attention_stats),
            ("query_skip", plan.active_noisy is not None, needs.query_skip is not None))
    missing = [name for name, used, declared in uses if used and not declared]
    if missing:
        raise RuntimeError(f"policy {policy!r} made a plan that needs {', '.join(missing)}, "
                           "which its `needs` does not declare")
