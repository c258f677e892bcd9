"""The typed run: one `Configuration` per grid point and the `ExpandedRun` (the validated config with all its
configurations), built once per `dropedit run` by `pipeline.config.expand_run` and passed to preflight, the dry
run and the graph.

Both are frozen. A configuration crosses Ray (to the GPU actors) and lands in rows as a plain mapping, through
`to_row` / `from_row` only."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .config import RunConfig


@dataclass(frozen=True, kw_only=True)
class Configuration:
    """One point of the grid: a model entry x a policy setting x a cache x a size x a seed."""

    model: str                        # the model entry's key (its label, else its name): the rows' `model`
    model_name: str                   # the registry name the model loads as
    model_path: str | None            # local folder or s3:// prefix; None: the built-in tiny / shipped model
    model_options: Mapping[str, Any]  # passed to the model adapter (lora)
    policy: str
    policy_params: Mapping[str, Any]  # one combination of the policy's grid axes (budget_from included)
    height: int
    width: int
    seed: int
    steps: int | None                 # the config's, else the family's protocol (None: unknown model)
    guidance_scale: float | None
    resize_filter: str | None
    cache: Mapping[str, Any] | None   # {"name", **params} of a temporal cache; None: no cache
    cache_label: str | None
    config_id: str                    # stable 12-hex identity (pipeline.config.config_id)
    label: str                        # policy, parameters and cache, for tables and plots
    full_config_id: str | None        # the uncached `full` of the same model, size and seed (the reference)
    budget_source: str | None = None  # config_id whose per-step kept counts are this one's budget

    @property
    def is_reference(self) -> bool:
        """The group's uncached `full`: what the others' fidelity and speedup compare with."""
        return self.config_id == self.full_config_id

    def to_row(self) -> dict[str, Any]:
        """A plain dict (deep copy): what crosses Ray and what rows are built from."""
        return dataclasses.asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Configuration":
        return cls(**row)


@dataclass(frozen=True)
class ExpandedRun:
    """A validated run config and all its configurations (``full`` first, duplicates dropped)."""

    config: "RunConfig"
    configurations: tuple[Configuration, ...]

    def model_keys(self) -> list[str]:
        """The model entries in configuration order: one actor pool each."""
        return list(dict.fromkeys(c.model for c in self.configurations))

    def of_model(self, key: str) -> tuple[Configuration, ...]:
        return tuple(c for c in self.configurations if c.model == key)


# ---- a configuration's identity and name


def _canonical(value: Any) -> Any:
    # 1 and 1.0 are the same setting: give them the same config_id.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def config_id(conf: Mapping[str, Any], resize_filter: str | None = None) -> str:
    """Stable 12-hex id of (model, policy, params, size, seed, steps, guidance), and of the resize filter when
    the config chose one (ids of runs at the family's filter stay what they were)."""
    key = {k: conf[k] for k in ("model", "policy", "policy_params", "height", "width", "seed", "steps", "guidance_scale")}
    if resize_filter is not None:
        key["resize_filter"] = resize_filter
    if conf.get("cache") is not None:   # uncached configurations keep the ids they had
        key["cache"] = conf["cache"]
    text = json.dumps(_canonical(key), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def config_label(policy: str, params: Mapping[str, Any]) -> str:
    """A short name for tables and plots: the policy and the parameters the configuration set."""
    def text(value: Any) -> str:
        return json.dumps(_canonical(value), separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)
    return " ".join([policy] + [f"{k}={text(v)}" for k, v in params.items()])
