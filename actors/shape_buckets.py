"""Bucketed token counts: a step's kept-source and active-noisy counts rounded up, so that a compiled transformer
sees a bounded number of shapes over an edit.

A count is rounded UP to a multiple of the bucket size (tokens, or a share of the tokens: "25%" gives at most
4 sizes whatever the resolution), capped at every token. The tokens added are the next-best ones by the
policy's own ranking (`Plan.source_rank`, `Plan.noisy_rank`: higher = wanted more); where a plan carries none
(a policy that gives a set only), a permutation of the tokens seeded by the edit's seed, the same at every
step. The added tokens are computed like the policy's own (no mask, no padding): the step is exact for the
bigger set. What the policy decided stays its own: the sampler's source-consistency still applies where the
policy dropped tokens, the policy observes as before, and SpotEdit's final replacement uses its own mask.

Off by default (`ShapeBuckets(bucket=0)`); an edit that turns it on installs `ShapeBucketing` first among its
mechanisms (`actors.mechanisms.mechanisms_for(edit, cache, buckets)`), so that every other one sees the rounded
plan.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, Union

import pydantic
import torch
from pydantic import BeforeValidator, ConfigDict

from policies import RunInfo

from .mechanisms import EditContext, Mechanism, StepCall


class BucketError(ValueError):
    """A bucket setting that cannot be accepted."""


def _tokens_or_share(value: Any) -> int | str:
    """A token count (an integer >= 0; 0 = off) or a share of the tokens written "P%" (0 < P <= 100)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1])
        except ValueError:
            raise BucketError(f"bucket: expected a share such as '25%', got {value!r}") from None
        if not 0.0 < share <= 100.0:
            raise BucketError(f"bucket: a share must be within 0% (excluded) and 100%, got {value!r}")
        return f"{share:g}%"
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise BucketError(f"bucket: expected a token count >= 0 or a share such as '25%', got {value!r}")
    return int(value)


TokensOrShare = Annotated[Union[int, str], BeforeValidator(_tokens_or_share)]


class ShapeBuckets(pydantic.BaseModel):
    """How one edit rounds its token counts. `bucket`: tokens (0 = off) or a share of the tokens ("25%")."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    bucket: TokensOrShare = 0

    def __init__(self, **params: Any) -> None:
        try:
            super().__init__(**params)
        except pydantic.ValidationError as err:   # one readable message, as the plug-ins give
            raise BucketError("; ".join(str(e.get("ctx", {}).get("error") or e["msg"]) for e in err.errors())) \
                from None

    @property
    def on(self) -> bool:
        return self.bucket != 0

    def size(self, total: int) -> int:
        """The bucket in tokens for a set of `total` tokens (a share rounded up, at least 1)."""
        if isinstance(self.bucket, str):
            return max(1, math.ceil(float(self.bucket[:-1]) / 100.0 * total))
        return int(self.bucket)

    def label(self) -> str:
        return "off" if not self.on else str(self.bucket)

    def mechanism(self, edit: EditContext) -> Mechanism:
        """The edit's `ShapeBucketing` (a `MechanismSpec`, as a temporal cache's spec is)."""
        return ShapeBucketing(self, edit.run)


def round_up(count: int, total: int, size: int) -> int:
    """`count` rounded up to a multiple of `size`, at most `total`; 0 stays 0 and `size` 0 changes nothing."""
    if size <= 0 or count <= 0:
        return count
    return min(total, math.ceil(count / size) * size)


def seeded_rank(total: int, seed: int, device: torch.device) -> torch.Tensor:
    """A ranking of `total` tokens from a permutation seeded by the edit's seed (first = ranked highest)."""
    order = torch.randperm(total, generator=torch.Generator("cpu").manual_seed(seed))
    rank = torch.empty(total)
    rank[order] = -torch.arange(total, dtype=torch.float32)
    return rank.to(device)


def widen(mask: torch.Tensor, rank: torch.Tensor, size: int) -> torch.Tensor:
    """`mask` (bool) with the next-best unselected tokens by `rank` added, up to its rounded-up count."""
    count = int(mask.sum())
    target = round_up(count, mask.numel(), size)
    if target == count:
        return mask
    score = torch.where(mask.to(rank.device), torch.full_like(rank, -math.inf), rank.float())
    # stable: equal scores are taken in token order, so that the choice repeats exactly
    add = torch.sort(score, descending=True, stable=True).indices[: target - count]
    out = mask.clone()
    out[add.to(out.device)] = True
    return out


class ShapeBucketing(Mechanism):
    """Rounds each step's kept-source and active-noisy counts up (`ShapeBuckets`) before the other mechanisms
    read the plan; counts what it added, for the edit's notes."""

    def __init__(self, buckets: ShapeBuckets, run: RunInfo) -> None:
        self.buckets, self.run = buckets, run
        self.fallback: dict[str, torch.Tensor] = {}   # per token set: the seeded ranking, built once per edit
        self.added = 0                                # tokens added over the edit (source + noisy)
        self.planned = 0                              # tokens the plans asked for (source + noisy)

    def _rank(self, name: str, given: torch.Tensor | None, total: int, device: torch.device) -> torch.Tensor:
        if given is not None:
            if given.numel() != total:
                raise RuntimeError(f"the plan's {name} ranks {given.numel()} tokens, the edit has {total}")
            return given.to(device)
        if name not in self.fallback:
            self.fallback[name] = seeded_rank(total, self.run.seed + (name == "noisy_rank"), device)
        return self.fallback[name]

    def _round(self, mask: torch.Tensor | None, name: str, given: torch.Tensor | None) -> torch.Tensor | None:
        if mask is None or bool(mask.all()):
            return mask
        total = mask.numel()
        wider = widen(mask, self._rank(name, given, total, mask.device), self.buckets.size(total))
        self.planned += int(mask.sum())
        self.added += int(wider.sum()) - int(mask.sum())
        return wider

    def before_call(self, call: StepCall) -> None:
        plan = call.plan
        keep = self._round(plan.keep_source, "source_rank", plan.source_rank)
        active = self._round(plan.active_noisy, "noisy_rank", plan.noisy_rank)
        if keep is plan.keep_source and active is plan.active_noisy:
            return
        call.plan = dataclasses.replace(plan, keep_source=keep, active_noisy=active)
        if keep is not plan.keep_source:   # the source rows the editor gathers, as it computes them from a plan
            call.kept = None if bool(keep.all()) else torch.nonzero(keep).flatten().to(call.kept.device)
            call.input_index = call.kept

    def result_notes(self) -> list[str]:
        return [f"shape buckets {self.buckets.label()}: {self.added} token(s) added to the {self.planned} the "
                "plans kept or activated, by the policy's ranking"]
