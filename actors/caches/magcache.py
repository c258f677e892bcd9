"""MagCache (Ma et al.; diffusers' `MagCacheConfig`): skip whole steps while the accumulated magnitude error stays
small.

The residual of the whole block stack (last block's image output − first block's image input) is remembered
from the last call that ran the blocks. Before each call, after the first `retention_ratio` of the steps, the
step's magnitude ratio γ_t (the model's calibrated ‖r_t‖/‖r_{t−1}‖, `ratios`) multiplies an accumulated ratio
Γ, the error accumulates ε += |1 − Γ|, and the call is skipped (every block; the image stream leaves as it
entered plus the remembered residual) while ε < `threshold` and at most `max_skip_steps` steps in a row;
otherwise the blocks run and Γ, ε and the count restart — the same rule as diffusers 0.42's hooks, with the
comparison strict so that `threshold` 0 never skips (the edit then equals the policy alone bit for bit).

`ratios`: "flux" (diffusers' FLUX_MAG_RATIOS, FLUX.1-dev at 28 steps, interpolated to the edit's steps, the
only ones diffusers ships; used for Qwen-Image-Edit too, with a note) or a list of numbers (one per step or
interpolated). `calibrate=true` never skips and reports the ratios this model and this edit measure, per branch,
in the result's `cache_summary["mag_ratios"]` (on the noisy rows): pass them back as `ratios`.

Under token pruning (decided here, and tested): the decision itself does not look at tokens (it is a schedule
from the calibrated ratios), so a changing kept set cannot break it; the remembered residual is kept per noisy
grid position and reused on the call's noisy rows only (as for first-block), so it never meets a source token
of another kept set, and a call whose noisy rows were never all computed is not skipped. Forced calls
(attention statistics, SpotEdit's full steps) run the blocks and restart the accumulation.
"""
from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS, nearest_interp
from pydantic import Field, field_validator
from typing_extensions import Annotated

from .runtime import BlockHook, BranchState, CacheRun, CacheRunInfo, all_valid, scatter_rows, with_rows
from .spec import CacheError, CacheSpec, Fraction, NonNegative, Number, Positive


class MagCache(CacheSpec, name="magcache"):
    threshold: NonNegative = 0.06          # diffusers' default
    max_skip_steps: Positive = 3           # K in the paper
    retention_ratio: Fraction = 0.2        # the first 20 % of the steps always compute
    ratios: Literal["flux"] | Annotated[list[Annotated[Number, Field(gt=0)]], Field(min_length=1)] = "flux"
    calibrate: bool = False

    @field_validator("ratios", mode="before")
    @classmethod
    def _words(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() != "flux":
            raise CacheError(f"parameter 'ratios' must be 'flux' or a list of numbers [a;b;...], got {value!r}")
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def never_skips(self) -> bool:
        return self.threshold == 0 or self.calibrate

    def start(self, run: CacheRunInfo) -> "MagCacheRun":
        return MagCacheRun(self, run)


class MagState(BranchState):
    def __init__(self) -> None:
        super().__init__()
        self.residual: torch.Tensor | None = None     # [B, num_noisy, C] the blocks' residual, last computed call
        self.valid: torch.Tensor | None = None
        self.head_input: torch.Tensor | None = None   # [B, m, C] noisy rows entering the first block
        self.ratio, self.error, self.accumulated = 1.0, 0.0, 0


class MagCacheRun(CacheRun):
    state_cls = MagState
    uses_blocks = True

    def __init__(self, spec: MagCache, run: CacheRunInfo) -> None:
        super().__init__(spec, run)
        base = FLUX_MAG_RATIOS if spec.ratios == "flux" else torch.tensor(spec.ratios, dtype=torch.float32)
        self.ratios = base if len(base) == run.steps else nearest_interp(base, run.steps)
        self.retention = int(spec.retention_ratio * run.steps + 0.5)
        self.measured: dict[str, list[float]] = {}   # calibration: per branch, one ratio per step
        if spec.ratios == "flux" and run.family != "flux" and not spec.calibrate:
            self.notes.append("magcache: FLUX.1-dev's magnitude ratios used for a Qwen-Image-Edit model (diffusers "
                              "ships no others); calibrate with magcache:calibrate=true and pass them as ratios")

    def applied(self) -> dict[str, Any]:
        return {**super().applied(), "ratios": [round(float(r), 5) for r in self.ratios]}

    def summary(self) -> dict[str, Any]:
        return {"mag_ratios": self.measured} if self.spec.calibrate else {}

    def head(self, forward: Callable[[], Any], kwargs: dict[str, Any], hook: BlockHook) -> Any:
        st: MagState = self.state()
        m, spec = st.rows, self.spec
        hidden_in = kwargs["hidden_states"]
        ids = self.ids(hidden_in.device)
        skip = False
        if not spec.calibrate and self.step >= self.retention:
            st.ratio *= float(self.ratios[min(self.step, len(self.ratios) - 1)])
            st.accumulated += 1
            st.error += abs(1.0 - st.ratio)
            self.note(measure=st.error)
            skip = (not self.force and all_valid(st.valid, ids) and st.error < spec.threshold
                    and st.accumulated <= spec.max_skip_steps)
        if skip:
            st.skipping = True
            self.note(skipped_blocks=self.info.num_layers, skipped_from=0)
            encoder = kwargs["encoder_hidden_states"]
            return hook.join(with_rows(hidden_in, m, hidden_in[:, :m] + st.residual[:, ids]), encoder)
        st.ratio, st.error, st.accumulated = 1.0, 0.0, 0
        st.head_input = hidden_in[:, :m]
        out = forward()
        if self.info.num_layers == 1:
            self._remember(st, hook.split(out)[0], ids)
        return out

    def tail(self, forward: Callable[[], Any], kwargs: dict[str, Any], hook: BlockHook) -> Any:
        st: MagState = self.state()
        if st.skipping:
            return hook.passthrough(kwargs)
        out = forward()
        hidden, _ = hook.split(out)
        self._remember(st, hidden, self.ids(hidden.device))
        return out

    def _remember(self, st: MagState, hidden: torch.Tensor, ids: torch.Tensor) -> None:
        residual = hidden[:, : st.rows] - st.head_input
        if self.spec.calibrate:
            ratios = self.measured.setdefault(self.branch, [])
            if all_valid(st.valid, ids):
                prev = st.residual[:, ids]
                ratios.append(float((residual.float().norm(dim=-1) / (prev.float().norm(dim=-1) + 1e-8)).mean()))
            else:
                ratios.append(1.0)
        st.residual, st.valid = scatter_rows(st.residual, st.valid, ids, residual, self.info.num_noisy)
        st.head_input = None
