"""The seam between a pruning policy and the sampling loop.

A `Policy` is an immutable, validated set of hyper-parameters. `Policy.start` returns a fresh
`PolicyRun` for one edit: every mask, score or random generator lives on that object, so two
records, two actors or two threads never share policy state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch


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
    # (x̂0 [num_noisy, C], metric) -> distance of each noisy token to the first reference, float [num_noisy];
    # metrics "lpips_vae", "l2", "cosine" (actors.spot_selector, timed as the step's selector_seconds)
    token_scores: Callable[[torch.Tensor, str], torch.Tensor] | None = None

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

    As a policy's `context` attribute it says what full steps must cache; in a plan, what this step uses.
    """

    noisy: bool = True             # inactive noisy tokens keep their cached K/V (False: they are absent)
    source: bool = True            # source tokens' K/V come from the cache (False: recomputed this step)
    alpha: float | None = None     # blend cached noisy K/V toward the source's at the same position (Eq. 8-9)


@dataclass(frozen=True)
class Plan:
    """What runs at one step. `None` means "everything"."""

    keep_source: torch.Tensor | None = None     # bool over all source tokens (references concatenated)
    from_layer: int = 0                          # prune only after this many transformer layers
    merge: bool = False                          # with from_layer: average dropped tokens into kept ones
    active_noisy: torch.Tensor | None = None     # bool over noisy tokens that get queries
    attention_layers: tuple[int, ...] = ()       # layers that must report attention statistics
    context: CachedContext | None = None         # with active_noisy: cached K/V for what has no queries


@dataclass(frozen=True)
class Seen:
    """What the loop shows the policy after a step (batch of one, packed token layout)."""

    x0: torch.Tensor         # clean estimate x̂0 over the noisy tokens, [num_noisy, C]
    source: torch.Tensor     # packed source latents, [num_source, C]
    velocity: torch.Tensor   # [num_noisy, C]
    attention: dict[int, Any] = field(default_factory=dict)   # layer -> actors.attention_stats.LayerStats


class PolicyRun(Protocol):
    """May also define `summary() -> dict`: what the edit's result should carry (e.g. calibration scores),
    and `replace_with_source() -> bool tensor | None`: noisy tokens overwritten by the source latent before
    decoding (SpotEdit's final replacement)."""

    def plan(self, step: Step) -> Plan: ...
    def observe(self, step: Step, seen: Seen) -> None: ...
    def applied(self) -> dict[str, Any]: ...   # every parameter as this edit uses it, defaults resolved


class Policy(Protocol):
    name: str
    regularize: bool   # apply TokenDrop's source-consistency closed form where tokens were dropped
    # optional `context: CachedContext | None`: what the K/V cache keeps at full steps (SpotEdit)

    def params(self) -> dict[str, Any]: ...
    def start(self, run: RunInfo) -> PolicyRun: ...


class PolicyError(ValueError):
    """A policy name or parameter that cannot be accepted; the message names the accepted values."""


def as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "1", "yes", "on", "false", "0", "no", "off"}:
        return value.lower() in {"true", "1", "yes", "on"}
    raise PolicyError(f"parameter {name!r} must be a boolean (true/false), got {value!r}")


def as_float(name: str, value: Any, lo: float | None = None, hi: float | None = None,
             hi_open: bool = False) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise PolicyError(f"parameter {name!r} must be a number, got {value!r}") from None
    if isinstance(value, bool) or out != out:
        raise PolicyError(f"parameter {name!r} must be a number, got {value!r}")
    if lo is not None and out < lo or hi is not None and (out > hi or hi_open and out >= hi):
        bracket = ")" if hi_open else "]"
        raise PolicyError(f"parameter {name!r} must lie in [{lo}, {hi}{bracket}, got {value!r}")
    return out


def as_int(name: str, value: Any, lo: int | None = None) -> int:
    if isinstance(value, bool):
        raise PolicyError(f"parameter {name!r} must be an integer, got {value!r}")
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise PolicyError(f"parameter {name!r} must be an integer, got {value!r}") from None
    if out != float(value):
        raise PolicyError(f"parameter {name!r} must be an integer, got {value!r}")
    if lo is not None and out < lo:
        raise PolicyError(f"parameter {name!r} must be >= {lo}, got {value!r}")
    return out
