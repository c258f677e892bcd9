"""The seam between a pruning policy and the sampling loop.

A `Policy` is an immutable set of hyper-parameters, declared as pydantic fields and validated on
construction. `Policy.start` returns a fresh `PolicyRun` for one edit: every mask, score or random
generator lives on that object, so two records, two actors or two threads never share policy state.
A policy says which engine mechanisms its plans use in `needs` (a temporal cache among them); the engine
installs those and no others.

A new policy is one module, registered where it is defined:

    class KeepCorners(Policy, name="keep_corners"):      # registered in REGISTRY as "keep_corners"
        size: Annotated[Integer, Field(ge=1)] = 1         # a parameter (types in policies.params)
        def start(self, run: RunInfo) -> PolicyRun: ...   # its plans use no mechanism: needs = Needs()

`policies.make("keep_corners", size=2)` builds it once the module is imported
(tests/test_policy_registration.py runs one).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import torch

from core.registry import Plugin, Registry

from .params import PolicyError


@dataclass(frozen=True)
class RunInfo:
    """What a policy may know about one edit before it starts."""

    family: str                                # "flux" | "qwen"
    noisy_grid: tuple[int, int]                # token grid (rows, cols) of the edited image
    source_grids: tuple[tuple[int, int], ...]  # one per reference image; the first is aligned with noisy_grid
    steps: int
    sigmas: torch.Tensor                       # scheduler sigmas, steps + 1 values (last is 0)
    seed: int
    device: torch.device
    num_layers: int = 0          # transformer blocks, numbered across the model (Flux: dual then single)
    architecture: str = ""       # transformer class name
    config_hash: str = ""        # identifies the transformer config (calibration files are tagged with it)
    model: str = ""              # the model folder's name ("" if unknown): tells apart models of one config
    # (x̂0 [num_noisy, C], metric) -> distance of each noisy token to the first reference, float [num_noisy];
    # metrics "lpips_vae", "l2", "cosine" (actors.spot_selector, timed as the step's selector_seconds)
    token_scores: Callable[[torch.Tensor, str], torch.Tensor] | None = None
    # the papers' settings for this family, by policy name (actors.families: `Family.paper`)
    paper: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def paper_default(self, policy: str, parameter: str) -> Any:
        """The papers' `parameter` of `policy` for this edit's family; an error, never another family's."""
        try:
            return self.paper[policy][parameter]
        except KeyError:
            raise PolicyError(f"policy {policy!r} has no default {parameter} for model family {self.family!r} "
                              f"(the papers give none): set {parameter} explicitly") from None

    @property
    def num_source(self) -> int:
        return sum(h * w for h, w in self.source_grids)

    @property
    def num_noisy(self) -> int:
        return self.noisy_grid[0] * self.noisy_grid[1]


@dataclass(frozen=True)
class Step:
    index: int
    sigma: float
    sigma_next: float


@dataclass(frozen=True)
class CachedContext:
    """Noisy tokens without queries (`Plan.active_noisy`) and source tokens that are not recomputed still
    serve as keys and values, from a per-edit K/V cache that every full step refreshes (SpotEdit).

    In a policy's `needs.query_skip` it says what full steps must cache; in a plan, what this step uses.
    """

    noisy: bool = True             # inactive noisy tokens keep their cached K/V (False: they are absent)
    source: bool = True            # source tokens' K/V come from the cache (False: recomputed this step)
    alpha: float | None = None     # blend cached noisy K/V toward the source's at the same position (Eq. 8-9)
    recursive: bool = True         # the blend replaces the cache (Algorithm S1); False: blended from the cache
    # in `needs`: plans may blend (set `alpha`), so full steps also keep what the blend reads after RoPE (the
    # source keys at the noisy tokens' positions, `actors.spot_buffers`)
    fusion: bool = False


# frozen noisy tokens and the source from the K/V cache filled at the last full step, no blending (focus, RegionE)
STATIC_CONTEXT = CachedContext(noisy=True, source=True, alpha=None)


@dataclass(frozen=True)
class Plan:
    """What runs at one step. `None` means "everything"."""

    keep_source: torch.Tensor | None = None     # bool over all source tokens (references concatenated)
    from_layer: int = 0                          # prune only after this many transformer layers
    merge: bool = False                          # with from_layer: average dropped tokens into kept ones
    active_noisy: torch.Tensor | None = None     # bool over noisy tokens that get queries
    attention_layers: tuple[int, ...] = ()       # layers that must report attention statistics
    context: CachedContext | None = None         # with active_noisy: cached K/V for what has no queries
    # a full step of a policy that skips queries: does it fill the K/V cache later partial steps read (then a
    # temporal cache must compute it)? None: every full step of such a policy does (SpotEdit)
    refreshes_context: bool | None = None
    # the policy's own ranking, higher = wanted more (float over all source / all noisy tokens): where shape
    # bucketing rounds a count up (`actors.shape_buckets`) it adds the next-best tokens by it; None: a ranking
    # seeded by the edit's seed
    source_rank: torch.Tensor | None = None
    noisy_rank: torch.Tensor | None = None


@dataclass(frozen=True)
class Seen:
    """What the loop shows the policy after a step (batch of one, packed token layout)."""

    x0: torch.Tensor         # clean estimate x̂0 over the noisy tokens, [num_noisy, C]
    source: torch.Tensor     # packed source latents, [num_source, C]
    velocity: torch.Tensor   # [num_noisy, C]
    attention: dict[int, Any] = field(default_factory=dict)   # layer -> actors.attention_stats.LayerStats


@dataclass(frozen=True)
class Needs:
    """Engine mechanisms a policy's plans use; the engine installs these and no others.
    Gathering source tokens at the transformer's input (Plan.keep_source, from layer 0) needs nothing."""

    layer_routing: bool = False               # plans with from_layer > 0 (and merge): ToPi Mode B
    attention_stats: bool = False             # plans with attention_layers
    query_skip: CachedContext | None = None   # plans with active_noisy; what full steps cache (SpotEdit)
    token_scores: bool = False                # uses RunInfo.token_scores (SpotSelector, VAE-decoder features)
    # a temporal cache every edit of this policy runs: an `actors.caches` spec, its label "name:k=v,..." or
    # {"name": ..., **params} (data, so that this layer needs no engine import); the engine builds it and
    # installs it with the mechanisms above. None: none (an edit may still ask for one)
    cache: Any = None


class PolicyRun(abc.ABC):
    """One edit's state: the plan of each step, and what the policy learns from the step it ran."""

    @abc.abstractmethod
    def plan(self, step: Step) -> Plan: ...

    def observe(self, step: Step, seen: Seen) -> None:
        return None   # default: nothing to learn

    @abc.abstractmethod
    def applied(self) -> dict[str, Any]:
        """Every parameter as this edit uses it, defaults resolved."""

    def summary(self) -> dict[str, Any]:
        return {}     # what the edit's result should carry (e.g. calibration scores)

    def replace_with_source(self) -> torch.Tensor | None:
        return None   # bool over noisy tokens overwritten by the source latent before decoding (SpotEdit)


# name -> policy class; filled by `Policy` subclasses declared with `name=...` as their modules are imported
REGISTRY: Registry[Policy] = Registry("policy", PolicyError)


class Policy(Plugin):
    """Immutable validated hyper-parameters; subclasses declare them as fields and implement `start`.
    Registration by `name=`, `params()` and the translation of validation errors: `core.registry.Plugin`."""

    registry: ClassVar[Registry[Policy]] = REGISTRY
    needs: ClassVar[Needs] = Needs()   # or a property where it depends on the parameters

    @property
    def regularize(self) -> bool:
        """TokenDrop's source-consistency sampler where tokens were dropped: the policy's `reg` parameter."""
        return bool(getattr(self, "reg", False))

    @abc.abstractmethod
    def start(self, run: RunInfo) -> PolicyRun:
        """A fresh run for one edit."""
