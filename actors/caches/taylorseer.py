"""TaylorSeer (Liu et al.; diffusers' `TaylorSeerCacheConfig`), in diffusers' "lite" form: whole transformer calls
predicted by a Taylor expansion of the transformer's output.

Computed calls record the output (the velocity rows of the noisy tokens); the Taylor factors are divided
differences over the computed steps, up to `order` (diffusers' `TaylorSeerState`, reused as is, in float32).
A predicted call runs nothing — no embedder, no block, no output head — and returns
Σ_k f_k·Δ^k/k! for the steps Δ since the last computed call. The schedule is diffusers': the first `warmup`
steps compute (`disable_cache_before_step`), then one computed call every `interval` steps
((step − warmup − 1) mod interval = 0), and every step from `stop` on (`disable_cache_after_step`).
`interval` 1 computes every call: the edit equals the policy alone bit for bit.

diffusers' full mode hooks every attention module and extrapolates its output per token; under pruning the
attention outputs change length and membership between steps (its factors restart, and a prediction of the old
length then meets a stream of the new length). Here (decided, and tested) the expansion is over the transformer's
output on the noisy tokens only, kept per noisy grid position: the kept source set never enters the cache, a
prediction always has the rows the step needs, and SpotEdit's inactive tokens keep the last value computed for
them (their divided differences are those of a constant). Forced calls (attention statistics, SpotEdit's full
steps) are computed and update the factors.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from diffusers.hooks.taylorseer_cache import TaylorSeerState
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from pydantic import Field, model_validator
from typing_extensions import Annotated

from .runtime import BranchState, CacheRun, CacheRunInfo, all_valid, scatter_rows
from .spec import CacheError, CacheSpec, Count, Integer, Positive


class TaylorSeer(CacheSpec, name="taylorseer"):
    interval: Positive = 5            # diffusers' cache_interval
    warmup: Count = 3                 # diffusers' disable_cache_before_step
    stop: Count | None = None         # diffusers' disable_cache_after_step
    order: Annotated[Integer, Field(ge=0, le=4)] = 1   # diffusers' max_order

    @model_validator(mode="after")
    def _stop_after_warmup(self) -> "TaylorSeer":
        if self.stop is not None and self.stop < self.warmup:
            raise CacheError(f"parameter 'stop' ({self.stop}) must be >= warmup ({self.warmup})")
        return self

    @property
    def never_skips(self) -> bool:
        return self.interval == 1

    def start(self, run: CacheRunInfo) -> "TaylorSeerRun":
        return TaylorSeerRun(self, run)


class SeerState(BranchState):
    def __init__(self, order: int = 1) -> None:
        super().__init__()
        self.seer = TaylorSeerState(taylor_factors_dtype=torch.float32, max_order=order)
        self.output: torch.Tensor | None = None   # [B, num_noisy, C] last computed output per noisy token
        self.valid: torch.Tensor | None = None


class TaylorSeerRun(CacheRun):
    uses_blocks = False

    def __init__(self, spec: TaylorSeer, run: CacheRunInfo) -> None:
        super().__init__(spec, run)
        from diffusers.hooks.hooks import StateManager
        self.states = StateManager(SeerState, (), {"order": spec.order})

    def _scheduled(self) -> bool:
        s, step = self.spec, self.step
        return (step < s.warmup or (step - s.warmup - 1) % s.interval == 0
                or (s.stop is not None and step >= s.stop))

    def decide_call(self, forward: Callable[[], Any], args: tuple, kwargs: dict[str, Any], st: SeerState) -> Any:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        ids = self.ids(hidden.device)
        m = st.rows
        st.seer.current_step = self.step
        if (not self.force and not self._scheduled() and all_valid(st.valid, ids)
                and st.seer.last_update_step is not None):
            st.skipping = True
            self.note(skipped_call=True, skipped_blocks=self.info.num_layers, skipped_from=0)
            prediction = st.seer.predict()[0][:, ids].to(hidden.dtype)
            if kwargs.get("return_dict", True):
                return Transformer2DModelOutput(sample=prediction)
            return (prediction,)
        out = forward()
        sample = out[0] if isinstance(out, tuple) else out.sample
        st.output, st.valid = scatter_rows(st.output, st.valid, ids, sample[:, :m].float(), self.info.num_noisy)
        if st.seer.last_update_step != self.step:
            st.seer.update((st.output.clone(),))
        return out
