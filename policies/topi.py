"""ToPi (Algorithm 1): influence-scored source-token pruning with periodic anchor steps.

Anchor steps (every `interval` steps from the first; only the first with `static`) run the full context
and report attention statistics on the representative layers; the policy then keeps the smallest set of
source tokens holding τ of the total score (Eq. 10; `select=mass`), or the ⌈keep·S⌉ highest-scoring ones
(`select=topk`: the fixed 50 % Top-K at which the paper's Tables 2, 3 and 5 compare methods). Other steps run the first `exempt_layers` layers on
the full context and the remaining layers on the kept tokens and their positions (Mode B).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import torch
from pydantic import BeforeValidator, Field, PrivateAttr

from .base import Needs, Plan, Policy, PolicyError, PolicyRun, RunInfo, Seen, Step
from .calibration import auto_layers, calibrated_layers, read_calibration
from .params import Count, Fraction, Integer, Number, Seed, layer_numbers
from .topi_select import LAYER_CHOICES, Score, Select, choose_layers, minimal_mass_set, token_scores, top_k_set

Mode = Literal["prune", "merge"]   # prune: drop the tokens; merge: average each into its nearest kept one
MODES = get_args(Mode)


def _layers(value: Any) -> str | tuple[int, ...]:
    """A word (auto, first, ...) or a calibration file's path stays a string; numbers become a sorted tuple."""
    numbers = layer_numbers(value)
    if numbers is not None:
        return numbers
    if not isinstance(value, str):
        raise PolicyError(f"parameter 'layers' must be {', '.join(LAYER_CHOICES)}, a calibration "
                          f"file or a list of layer numbers, got {value!r}")
    return value


class ToPiRun(PolicyRun):
    def __init__(self, policy: "ToPi", run: RunInfo) -> None:
        if policy.exempt_layers >= run.num_layers:
            raise PolicyError(f"exempt_layers={policy.exempt_layers} leaves no layer to prune on a "
                              f"{run.num_layers}-layer transformer; pass exempt_layers < {run.num_layers}")
        self.layers, self.layer_source = policy.resolve_layers(run)
        too_deep = [layer for layer in self.layers if layer >= run.num_layers]
        if too_deep:
            raise PolicyError(f"layers {too_deep} do not exist in a {run.num_layers}-layer transformer")
        self.policy, self.run = policy, run
        self.keep: torch.Tensor | None = None
        self.anchors: list[int] = []
        self.kept_after_anchor: list[int] = []

    def is_anchor(self, index: int) -> bool:
        if self.policy.static:
            return index == 0
        return index % self.policy.interval == 0

    def plan(self, step: Step) -> Plan:
        if self.is_anchor(step.index) or self.keep is None:
            return Plan(attention_layers=self.layers)
        return Plan(keep_source=self.keep, from_layer=self.policy.exempt_layers,
                    merge=self.policy.mode == "merge")

    def observe(self, step: Step, seen: Seen) -> None:
        if not seen.attention:
            return
        scores = token_scores(seen.attention, self.layers, self.policy.score)
        if self.policy.select == "topk":
            self.keep = top_k_set(scores, self.policy.keep).to(self.run.device)
        else:
            self.keep = minimal_mass_set(scores, self.policy.tau).to(self.run.device)
        self.anchors.append(step.index)
        self.kept_after_anchor.append(int(self.keep.sum()))

    def applied(self) -> dict[str, Any]:
        return {**self.policy.params(), "layers": list(self.layers), "layer_source": self.layer_source}

    def summary(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "layer_source": self.layer_source, "anchors": self.anchors,
                "kept_after_anchor": self.kept_after_anchor}


class ToPi(Policy, name="topi"):
    needs = Needs(layer_routing=True, attention_stats=True)

    tau: Annotated[Number, Field(ge=0.0, le=1.0)] = 0.85   # select=mass: share of the total score kept
    select: Select = "mass"                                 # mass (Eq. 10) or topk (the ablations' fixed 50 %)
    keep: Fraction = 0.5                                    # select=topk: ⌈keep·S⌉ highest-scoring tokens
    interval: Annotated[Integer, Field(ge=1)] = 10          # steps between anchors
    exempt_layers: Count = 10                               # layers that run on every token
    layers: Annotated[str | tuple[int, ...], BeforeValidator(_layers)] = "auto"
    top_m: Annotated[Integer, Field(ge=1)] = 3              # layers for first / last / random
    score: Score = "influence"
    mode: Mode = "prune"
    static: bool = False                                    # one anchor (step 0) instead of every interval
    reg: bool = False
    seed: Seed = 0                                          # for layers=random

    _calibration: dict[str, Any] | None = PrivateAttr(None)

    def model_post_init(self, context: Any) -> None:
        if isinstance(self.layers, str) and self.layers not in LAYER_CHOICES:
            self._calibration = read_calibration(self.layers)   # a file: read once, checked per edit

    @property
    def explicit(self) -> tuple[int, ...] | None:
        """The layers given as numbers, else None."""
        return self.layers if isinstance(self.layers, tuple) else None

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The calibration document when `layers` names a file, else None."""
        return self._calibration

    def resolve_layers(self, run: RunInfo) -> tuple[tuple[int, ...], str]:
        if self.explicit is not None:
            return self.explicit, "explicit"
        if self.calibration is not None:
            return calibrated_layers(self.calibration, run, repr(self.layers)), f"calibration:{self.layers}"
        if self.layers == "auto":
            return auto_layers(run)
        return choose_layers(self.layers, run.num_layers, self.top_m, self.seed), self.layers

    def start(self, run: RunInfo) -> ToPiRun:
        return ToPiRun(self, run)
