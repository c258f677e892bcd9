"""ToPi's offline calibration (Section 4.1): the context sensitivity score of every layer (Eq. 4) and its
top-M representative layers (Eq. 5), and the JSON file that carries them to the `topi` policy."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from core.resources import resource

from .base import Needs, Plan, Policy, PolicyError, PolicyRun, RunInfo, Seen, Step

FORMAT = "dropedit.topi-calibration/1"
SHIPPED = resource("configs", "calibration")


class SensitivityRun(PolicyRun):
    """Full context at every step; every layer reports Σ_h Σ_noisy i Σ_source j A (Eq. 4's inner sum)."""

    def __init__(self, run: RunInfo) -> None:
        self.layers = tuple(range(run.num_layers))
        self.total = torch.zeros(run.num_layers, dtype=torch.float64)
        self.steps = 0

    def plan(self, step: Step) -> Plan:
        return Plan(attention_layers=self.layers)

    def observe(self, step: Step, seen: Seen) -> None:
        for layer, stats in seen.attention.items():
            self.total[layer] += float(stats.mass.double().sum()) / stats.calls   # mean over CFG calls
        self.steps += 1

    def applied(self) -> dict[str, Any]:
        return {}

    def summary(self) -> dict[str, Any]:
        """Per-layer sensitivity of this edit, averaged over its steps."""
        return {"context_sensitivity": (self.total / max(self.steps, 1)).tolist(), "steps": self.steps}


class ContextSensitivity(Policy):
    """A calibration pass, not a pruning policy: it drops nothing and only measures (so it is not
    registered: `policies.make` does not offer it)."""

    name: ClassVar[str] = "calibration"
    needs = Needs(attention_stats=True)

    def start(self, run: RunInfo) -> SensitivityRun:
        return SensitivityRun(run)


def calibration_document(scores: Sequence[float], top_m: int, architecture: dict[str, Any],
                         samples: int, steps: int, model: str) -> dict[str, Any]:
    """Eq. 5: the top-M layers by mean sensitivity, with every layer's score and the architecture tag."""
    order = sorted(range(len(scores)), key=lambda layer: (-scores[layer], layer))
    return {
        "format": FORMAT,
        "model": model,
        "architecture": architecture,          # class, num_layers, config_hash
        "samples": samples,
        "steps": steps,
        "top_m": int(top_m),
        "layers": sorted(order[:top_m]),
        "scores": [float(s) for s in scores],
    }


def read_calibration(path: str | Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise PolicyError(f"cannot read calibration file {str(path)!r}: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("layers"), list):
        raise PolicyError(f"{str(path)!r} is not a ToPi calibration file (format {FORMAT!r})")
    return doc


def calibrated_layers(doc: dict[str, Any], run: RunInfo, origin: str) -> tuple[int, ...]:
    """The file's layers, after checking it was made for this very transformer."""
    arch = doc.get("architecture", {})
    if arch.get("config_hash") != run.config_hash or arch.get("num_layers") != run.num_layers:
        raise PolicyError(
            f"calibration {origin} was made for {arch.get('class')} with {arch.get('num_layers')} layers "
            f"(config {arch.get('config_hash')}), but this edit runs {run.architecture} with "
            f"{run.num_layers} layers (config {run.config_hash}); run `dropedit calibrate` for this model")
    return tuple(int(x) for x in doc["layers"])


def _shipped_for(run: RunInfo) -> tuple[Path, dict[str, Any]] | None:
    """The shipped calibration of this config; where several models share the config (trained toys of one
    architecture), the one made for the edit's model folder, and an error rather than a silent guess."""
    if not SHIPPED.is_dir():
        return None
    matches = [(p, d) for p in sorted(SHIPPED.glob("*.json"))
               for d in [read_calibration(p)] if d.get("architecture", {}).get("config_hash") == run.config_hash]
    if len(matches) > 1:
        named = [(p, d) for p, d in matches if run.model and d.get("model") == run.model]
        if len(named) != 1:
            raise PolicyError(f"layers=auto: {len(matches)} shipped calibrations fit this config "
                              f"({', '.join(p.name for p, _ in matches)}) and none is for model {run.model!r}: "
                              "pass layers=FILE")
        matches = named
    return matches[0] if matches else None


def auto_layers(run: RunInfo) -> tuple[tuple[int, ...], str]:
    """A shipped calibration for this exact config, else the paper's layers for the real architectures."""
    found = _shipped_for(run)
    if found is not None:
        path, doc = found
        return calibrated_layers(doc, run, str(path)), f"calibration:{path.name}"
    # the layers the paper reports for the family's real checkpoint (by depth; actors.families)
    paper = run.paper.get("topi", {}).get("layers", {}).get(run.num_layers)
    if paper is not None:
        return paper, "paper"
    raise PolicyError(
        f"no calibration for {run.architecture} with {run.num_layers} layers (config {run.config_hash}): "
        "run `dropedit calibrate` and pass layers=FILE, or choose layers=first|last|random|all or a list")
