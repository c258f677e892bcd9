"""ToPi (Algorithm 1): influence-scored source-token pruning with periodic anchor steps.

Anchor steps (every `interval` steps from the first; only the first with `static`) run the full context
and report attention statistics on the representative layers; the policy then keeps the smallest set of
source tokens holding τ of the total score (Eq. 10). Other steps run the first `exempt_layers` layers on
the full context and the remaining layers on the kept tokens and their positions (Mode B).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .base import Plan, PolicyError, RunInfo, Seen, Step, as_bool, as_float, as_int
from .calibration import auto_layers, calibrated_layers, read_calibration
from .topi_select import LAYER_CHOICES, SCORES, choose_layers, minimal_mass_set, token_scores

MODES = ("prune", "merge")


def _explicit_layers(value: Any) -> tuple[int, ...] | None:
    """A list of layer numbers, or a comma-separated string of them; None when `value` is not one."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.strip("[]").split(",") if p.strip()]
        if not parts or not all(p.lstrip("-").isdigit() for p in parts):
            return None
        value = parts
    if isinstance(value, (list, tuple)):
        try:
            return tuple(sorted({as_int("layers", v, lo=0) for v in value}))
        except PolicyError:
            raise PolicyError(f"parameter 'layers' must list layer numbers >= 0, got {value!r}") from None
    return None


class ToPiRun:
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
        self.keep = minimal_mass_set(scores, self.policy.tau).to(self.run.device)
        self.anchors.append(step.index)
        self.kept_after_anchor.append(int(self.keep.sum()))

    def applied(self) -> dict[str, Any]:
        return {**self.policy.params(), "layers": list(self.layers), "layer_source": self.layer_source}

    def summary(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "layer_source": self.layer_source, "anchors": self.anchors,
                "kept_after_anchor": self.kept_after_anchor}


class ToPi:
    name = "topi"

    def __init__(self, tau: float = 0.85, interval: int = 10, exempt_layers: int = 10,
                 layers: str | Sequence[int] = "auto", top_m: int = 3, score: str = "influence",
                 mode: str = "prune", static: bool = False, reg: bool = False, seed: int = 0) -> None:
        self.tau = as_float("tau", tau, lo=0.0, hi=1.0)
        self.interval = as_int("interval", interval, lo=1)
        self.exempt_layers = as_int("exempt_layers", exempt_layers, lo=0)
        self.top_m = as_int("top_m", top_m, lo=1)
        self.static = as_bool("static", static)
        self.regularize = as_bool("reg", reg)
        self.seed = as_int("seed", seed, lo=0)
        if score not in SCORES:
            raise PolicyError(f"parameter 'score' must be one of {', '.join(SCORES)}, got {score!r}")
        if mode not in MODES:
            raise PolicyError(f"parameter 'mode' must be one of {', '.join(MODES)}, got {mode!r}")
        self.score, self.mode = score, mode
        self.explicit = _explicit_layers(layers)
        self.calibration = None
        if self.explicit is None:
            if not isinstance(layers, str):
                raise PolicyError(f"parameter 'layers' must be {', '.join(LAYER_CHOICES)}, a calibration "
                                  f"file or a list of layer numbers, got {layers!r}")
            if layers not in LAYER_CHOICES:
                self.calibration = read_calibration(layers)   # a file: read once, checked per edit
        self.layers = layers if self.explicit is None else list(self.explicit)

    def resolve_layers(self, run: RunInfo) -> tuple[tuple[int, ...], str]:
        if self.explicit is not None:
            return self.explicit, "explicit"
        if self.calibration is not None:
            return calibrated_layers(self.calibration, run, repr(self.layers)), f"calibration:{self.layers}"
        if self.layers == "auto":
            return auto_layers(run)
        return choose_layers(self.layers, run.num_layers, self.top_m, self.seed), self.layers

    def params(self) -> dict[str, Any]:
        return {"tau": self.tau, "interval": self.interval, "exempt_layers": self.exempt_layers,
                "layers": self.layers, "top_m": self.top_m, "score": self.score, "mode": self.mode,
                "static": self.static, "reg": self.regularize, "seed": self.seed}

    def start(self, run: RunInfo) -> ToPiRun:
        return ToPiRun(self, run)
