"""Adaptive velocity decay cache (RegionE, arXiv 2510.25590; as github.com/Peyton-Chen/RegionE runs it).

Between adjacent steps the velocity of the edited tokens changes mostly in scale: v_i ≈ r_i·v_{i−1} with
r_i = γ_{i−1}·(1 − (σ_{i−1} − σ_i)), γ a per-step table fitted offline for a 28-step schedule. Each call not
forced: r_i ≥ 1 computes; otherwise the decay accumulates (a ← a·r_i) and the call computes when 1 − a > δ
(then a ← 1), else it is skipped and returns the last computed output times r_i (not times a: the official
loop scales the cached velocity by the current ratio). Forced calls (the policy's full steps, the first
`warmup` steps) compute and reset a. Nothing runs in a skipped call (no embedder, block or head).

Like every cache here (actors.caches.runtime), the output it keeps and predicts is per noisy token, over the rows
the call computes (RegionE: the edited tokens only), per CFG branch. One difference from the official Qwen loop,
which caches the velocity after true CFG and its norm rescaling: here each branch's call output is cached and
predicted with the same ratio (both branches decide alike), and CFG is applied to the predictions.

`gamma`: "regione" takes the official table of the edit's family (FLUX.1-Kontext: `FluxKontext/inplace.py`,
Qwen-Image-Edit: `QwenImageEdit/inplace.py`; 28 steps only, as the official code asserts), or one number for
every step (any step count). `delta` None: the official value of the family (Kontext 0.04, Qwen 0.03).
`delta=0` never skips: the edit equals the policy alone bit for bit.
"""
from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.hooks.hooks import StateManager

from .runtime import BranchState, CacheRun, CacheRunInfo, all_valid, scatter_rows
from .spec import CacheError, CacheSpec, Count, NonNegative, Number

GAMMA = {   # γ_0 … γ_26 of the official code (float16 there), by family
    "flux": (0.8352, 0.9986, 1.0090, 1.0097, 1.0161, 1.0152, 1.0160, 1.0173, 1.0177, 1.0199, 1.0213, 1.0203,
             1.0257, 1.0236, 1.0235, 1.0278, 1.0302, 1.0311, 1.0352, 1.0371, 1.0391, 1.0459, 1.0498, 1.0581,
             1.0693, 1.0866, 1.1090),
    "qwen": (1.0195, 1.0233, 1.0243, 1.0185, 1.0321, 1.0208, 1.0260, 1.0233, 1.0258, 1.0292, 1.0316, 1.0306,
             1.0289, 1.0347, 1.0329, 1.0402, 1.0378, 1.0384, 1.0413, 1.0444, 1.0526, 1.0400, 1.0555, 1.0439,
             1.0357, 1.0118, 0.7603),
}
DELTA = {"flux": 0.04, "qwen": 0.03}   # the official cache_threshold per model
TABLE_STEPS = 28


class VelocityDecay(CacheSpec, name="velocity-decay"):
    delta: NonNegative | None = None            # skip while 1 − accumulated decay <= delta; None: the family's
    gamma: Literal["regione"] | Number = "regione"   # the family's fitted table (28 steps), or one number
    warmup: Count = 1                           # steps always computed at the start (the first fills the cache)

    @property
    def never_skips(self) -> bool:
        return self.delta == 0

    def refusal(self, family: str, steps: int) -> str | None:
        try:
            gamma_table(self.gamma, family, steps)
        except CacheError as err:
            return str(err)
        if self.delta is None and family not in DELTA:
            return f"velocity-decay has no official delta for model family {family!r}: set delta"
        return None

    def start(self, run: CacheRunInfo) -> "VelocityDecayRun":
        return VelocityDecayRun(self, run)


def gamma_table(gamma: str | float, family: str, steps: int) -> tuple[float, ...]:
    """γ_0 … γ_{steps−2}: the family's official table (28 steps only) or one number repeated."""
    if gamma != "regione":
        return (float(gamma),) * max(0, steps - 1)
    if family not in GAMMA:
        raise CacheError(f"velocity-decay has no fitted gamma for model family {family!r} (RegionE fits "
                         f"{', '.join(GAMMA)}): give gamma as a number")
    if steps != TABLE_STEPS:
        raise CacheError(f"velocity-decay's fitted gamma is for {TABLE_STEPS} steps (RegionE asserts it), this "
                         f"edit has {steps}: give gamma as a number")
    return GAMMA[family]


def decide(accumulated: float, ratio: float, delta: float) -> tuple[bool, float]:
    """One unforced call of the official loop: (skip, the accumulated decay after it)."""
    if ratio >= 1.0 or 1.0 - accumulated * ratio > delta:
        return False, 1.0
    return True, accumulated * ratio


class DecayState(BranchState):
    def __init__(self) -> None:
        super().__init__()
        self.accumulated = 1.0
        self.output: torch.Tensor | None = None   # [B, num_noisy, C] last computed output per noisy token
        self.valid: torch.Tensor | None = None


class VelocityDecayRun(CacheRun):
    state_cls = DecayState
    uses_blocks = False

    def __init__(self, spec: VelocityDecay, run: CacheRunInfo) -> None:
        super().__init__(spec, run)
        refusal = spec.refusal(run.family, run.steps)
        if refusal:
            raise CacheError(refusal)
        self.gamma = gamma_table(spec.gamma, run.family, run.steps)
        self.delta = DELTA.get(run.family, 0.0) if spec.delta is None else float(spec.delta)
        self.states = StateManager(DecayState)

    def applied(self) -> dict[str, Any]:
        return {**super().applied(), "delta": self.delta}

    def ratio(self) -> float:
        """r_i = γ_{i−1}·(1 − (σ_{i−1} − σ_i)) (the official (1 + (t_i − t_{i−1})/1000), t = 1000·σ)."""
        i, sigmas = self.step, self.info.sigmas
        return self.gamma[i - 1] * (1.0 - (sigmas[i - 1] - sigmas[i]))

    def _skips(self, st: DecayState, ids: torch.Tensor) -> tuple[bool, float]:
        if self.force or self.step < max(1, self.spec.warmup) or not all_valid(st.valid, ids):
            st.accumulated = 1.0
            return False, 1.0
        ratio = self.ratio()
        skip, st.accumulated = decide(st.accumulated, ratio, self.delta)
        return skip, ratio

    def decide_call(self, forward: Callable[[], Any], args: tuple, kwargs: dict[str, Any], st: DecayState) -> Any:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        ids = self.ids(hidden.device)
        skip, ratio = self._skips(st, ids)
        self.note(measure=1.0 - st.accumulated)
        if skip:
            st.skipping = True
            self.note(skipped_call=True, skipped_blocks=self.info.num_layers, skipped_from=0)
            prediction = (st.output[:, ids] * ratio).to(hidden.dtype)
            return Transformer2DModelOutput(sample=prediction) if kwargs.get("return_dict", True) else (prediction,)
        out = forward()
        sample = out[0] if isinstance(out, tuple) else out.sample
        st.output, st.valid = scatter_rows(st.output, st.valid, ids, sample[:, : st.rows].float(), self.info.num_noisy)
        return out
