"""Run configuration: YAML -> validated dataclasses -> the ablation grid.

Errors name the offending key (dotted path) and, where there is a fixed set, the
accepted values.  Credentials are refused anywhere in the config: S3 access comes
only from the standard AWS credential chain.

Grid: models x policies (every list-valued policy parameter is a grid axis) x
resolutions x seeds.  To pass a list as ONE parameter value, wrap it in another
list (``layers: [[3, 7, 11]]``).  When the ``vs_full`` metrics are requested and
no ``full`` policy is listed, the grid adds ``full`` (no parameters) so that every
(model, size, seed) has the reference output the fidelity metrics compare to; each
configuration carries the ``full_config_id`` of that reference.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Collection, Mapping, Sequence

import yaml

from pipeline import storage as st

FULL_POLICY = "full"
METRIC_GROUPS = ("background", "vs_full", "lpips")
LPIPS_NETS = ("alex", "squeeze", "vgg")
INPUT_FORMATS = ("auto", "manifest", "pie", "gedit", "imgedit")
TOP_LEVEL_KEYS = (
    "run_id",
    "input",
    "output",
    "models",
    "policies",
    "resolutions",
    "seeds",
    "steps",
    "guidance_scale",
    "storage",
    "actors",
    "metrics",
    "model_cache_dir",
)
REQUIRED_KEYS = ("input", "output", "models", "policies")


class ConfigError(ValueError):
    """A config value that cannot be used; the message starts with its dotted key."""


# --------------------------------------------------------------------- sections


@dataclass(frozen=True)
class InputConfig:
    uri: str
    format: str = "auto"
    options: Mapping[str, Any] = field(default_factory=dict)  # reader kwargs (image_root, ...)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: str | None = None  # local folder or s3:// prefix (synced once per node); None for built-in tiny models
    options: Mapping[str, Any] = field(default_factory=dict)  # passed to the model adapter
    label: str | None = None  # what rows and reports call it; needed when a name appears more than once

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class PolicySpec:
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)  # list values = grid axes


@dataclass(frozen=True)
class ActorConfig:
    num_gpus: float = 1.0
    num_cpus: float = 1.0
    min_size: int = 1
    max_size: int = 1
    batch_size: int = 1


@dataclass(frozen=True)
class MetricsConfig:
    compute: tuple[str, ...] = METRIC_GROUPS
    lpips_weights: str | None = None  # torchvision backbone .pth (file or folder)
    lpips_net: str = "alex"


@dataclass(frozen=True)
class RunConfig:
    input: InputConfig
    output: str
    models: tuple[ModelSpec, ...]
    policies: tuple[PolicySpec, ...]
    resolutions: tuple[tuple[int, int], ...] = ((1024, 1024),)  # (height, width)
    seeds: tuple[int, ...] = (0,)
    steps: int = 28
    guidance_scale: float = 2.5
    storage: st.StorageConfig = field(default_factory=st.StorageConfig)
    actors: ActorConfig = field(default_factory=ActorConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    model_cache_dir: str = "~/.cache/dropedit/models"
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- loading


def load_config(
    uri: str,
    overrides: Sequence[str] = (),
    known_policies: Collection[str] | None = None,
) -> RunConfig:
    """Read a YAML config (local or s3://), apply ``--set`` overrides, validate."""
    raw = yaml.safe_load(st.read_bytes(uri).decode("utf-8"))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{uri}: the config must be a YAML mapping")
    return parse_config(apply_overrides(raw, overrides), known_policies=known_policies)


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=VALUE`` -> (["a", "b"], yaml-parsed VALUE)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: bad dotted key {key!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value is not valid YAML: {exc}") from None
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e-3" as a string; users mean a number
    return key.split("."), value


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key=value`` applied (numeric parts index lists)."""
    out = copy.deepcopy(dict(raw))
    for item in overrides:
        parts, value = parse_override(item)
        node: Any = out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {where}: no list item {part!r} (length {len(node)})")
                idx = int(part)
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}  # new (or empty) section
                    elif not isinstance(node[part], (dict, list)):
                        raise ConfigError(f"--set {item}: {where} is a scalar, cannot set a key in it")
                    node = node[part]
            else:
                raise ConfigError(f"--set {where}: parent is a scalar, cannot set a key in it")
    return out


# ------------------------------------------------------------------- validation


def _reject_credentials(node: Any, path: str = "") -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key).lower() in st.CREDENTIAL_KEYS:
                raise ConfigError(
                    f"{where}: credentials must not be in the config (they would end up in logs "
                    "and outputs); use the standard AWS credential chain instead"
                )
            _reject_credentials(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _reject_credentials(value, f"{path}.{i}")


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    _require(isinstance(value, Mapping), key, f"must be a mapping, got {type(value).__name__}")
    return value


def _check_keys(data: Mapping[str, Any], key: str, accepted: Sequence[str]) -> None:
    for k in data:
        if k not in accepted:
            where = f"{key}.{k}" if key else str(k)
            raise ConfigError(f"{where}: unknown key; accepted keys: {', '.join(accepted)}")


def _int(value: Any, key: str, minimum: int | None = None) -> int:
    _require(isinstance(value, int) and not isinstance(value, bool), key, f"must be an integer, got {value!r}")
    if minimum is not None:
        _require(value >= minimum, key, f"must be >= {minimum}, got {value}")
    return int(value)


def _number(value: Any, key: str, minimum: float | None = None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    _require(ok, key, f"must be a number, got {value!r}")
    if minimum is not None:
        _require(value >= minimum, key, f"must be >= {minimum}, got {value}")
    return float(value)


def _string(value: Any, key: str) -> str:
    _require(isinstance(value, str) and value.strip() != "", key, f"must be a non-empty string, got {value!r}")
    return value.strip()


def _list(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        value = [value]  # a scalar means a one-element list
    _require(len(value) > 0, key, "must not be empty")
    return value


def parse_config(raw: Mapping[str, Any], known_policies: Collection[str] | None = None) -> RunConfig:
    """Validate a raw config mapping; ``known_policies`` (if given) restricts policy names."""
    raw = _mapping(raw, "config")
    _reject_credentials(raw)
    _check_keys(raw, "", TOP_LEVEL_KEYS)
    for key in REQUIRED_KEYS:
        _require(key in raw, key, "is required")
    try:
        storage = st.StorageConfig.from_mapping(raw.get("storage"))
    except (st.StorageConfigError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    resolutions = _list(raw.get("resolutions", [1024]), "resolutions")
    seeds = _list(raw.get("seeds", [0]), "seeds")
    return RunConfig(
        input=_parse_input(raw["input"]),
        output=_string(raw["output"], "output"),
        models=_parse_models(raw["models"]),
        policies=_parse_policies(raw["policies"], known_policies),
        resolutions=tuple(_resolution(r, f"resolutions.{i}") for i, r in enumerate(resolutions)),
        seeds=tuple(_int(s, f"seeds.{i}") for i, s in enumerate(seeds)),
        steps=_int(raw.get("steps", 28), "steps", 1),
        guidance_scale=_number(raw.get("guidance_scale", 2.5), "guidance_scale", 0),
        storage=storage,
        actors=_parse_actors(raw.get("actors") or {}),
        metrics=_parse_metrics(raw.get("metrics") or {}),
        model_cache_dir=_string(raw.get("model_cache_dir", RunConfig.model_cache_dir), "model_cache_dir"),
        run_id=None if raw.get("run_id") is None else _string(str(raw["run_id"]), "run_id"),
    )


def _parse_input(inp: Any) -> InputConfig:
    if isinstance(inp, str):
        inp = {"uri": inp}  # shorthand: just the URI, format detected
    inp = _mapping(inp, "input")
    _check_keys(inp, "input", ("uri", "format", "options"))
    fmt = inp.get("format", "auto")
    _require(fmt in INPUT_FORMATS, "input.format", f"got {fmt!r}; accepted values: {', '.join(INPUT_FORMATS)}")
    return InputConfig(
        uri=_string(inp.get("uri"), "input.uri"),
        format=fmt,
        options=dict(_mapping(inp.get("options") or {}, "input.options")),
    )


MODEL_OPTIONS = ("lora",)   # lora: folder (or s3:// prefix) of a LoRA adapter saved by actors.lora.save_lora


def _parse_models(value: Any) -> tuple[ModelSpec, ...]:
    models = []
    for i, m in enumerate(_list(value, "models")):
        m = _mapping(m, f"models.{i}")
        _check_keys(m, f"models.{i}", ("name", "path", "options", "label"))
        models.append(
            ModelSpec(
                name=_string(m.get("name"), f"models.{i}.name"),
                path=None if m.get("path") is None else _string(m.get("path"), f"models.{i}.path"),
                options=dict(_mapping(m.get("options") or {}, f"models.{i}.options")),
                label=None if m.get("label") is None else _string(m.get("label"), f"models.{i}.label"),
            )
        )
        unknown = sorted(set(models[-1].options) - set(MODEL_OPTIONS))
        _require(not unknown, f"models.{i}.options", f"unknown keys {unknown}; accepted: {', '.join(MODEL_OPTIONS)}")
    # the same name may appear with another path or options (a fine-tuned copy, a LoRA) under its own label:
    # the label is the `model` column of the rows, so the entries' results stay apart
    keys = [m.key for m in models]
    for i, k in enumerate(keys):
        _require(keys.count(k) == 1, f"models.{i}.label",
                 f"{k!r} names more than one model entry; give entries that share a name distinct labels")
    return tuple(models)


def _parse_policies(value: Any, known: Collection[str] | None) -> tuple[PolicySpec, ...]:
    policies = []
    for i, p in enumerate(_list(value, "policies")):
        if isinstance(p, str):
            p = {"name": p}
        p = _mapping(p, f"policies.{i}")
        name = _string(p.get("name"), f"policies.{i}.name")
        if known is not None:
            _require(
                name in known,
                f"policies.{i}.name",
                f"unknown policy {name!r}; accepted values: {', '.join(sorted(known))}",
            )
        params = {k: v for k, v in p.items() if k != "name"}
        for k, v in params.items():
            _require(not (isinstance(v, list) and not v), f"policies.{i}.{k}", "empty list expands to no configurations")
        policies.append(PolicySpec(name=name, params=params))
    return tuple(policies)


def _parse_actors(value: Any) -> ActorConfig:
    act = _mapping(value, "actors")
    _check_keys(act, "actors", tuple(ActorConfig.__dataclass_fields__))
    actors = ActorConfig(
        num_gpus=_number(act.get("num_gpus", 1), "actors.num_gpus", 0),
        num_cpus=_number(act.get("num_cpus", 1), "actors.num_cpus", 0),
        min_size=_int(act.get("min_size", 1), "actors.min_size", 1),
        max_size=_int(act.get("max_size", act.get("min_size", 1)), "actors.max_size", 1),
        batch_size=_int(act.get("batch_size", 1), "actors.batch_size", 1),
    )
    _require(actors.max_size >= actors.min_size, "actors.max_size", f"must be >= actors.min_size ({actors.min_size})")
    return actors


def _parse_metrics(value: Any) -> MetricsConfig:
    met = _mapping(value, "metrics")
    _check_keys(met, "metrics", tuple(MetricsConfig.__dataclass_fields__))
    # ``compute: []`` switches every metric off; a missing key means all of them.
    compute = [] if met.get("compute") == [] else _list(met.get("compute", list(METRIC_GROUPS)), "metrics.compute")
    for i, c in enumerate(compute):
        _require(c in METRIC_GROUPS, f"metrics.compute.{i}", f"got {c!r}; accepted values: {', '.join(METRIC_GROUPS)}")
    net = met.get("lpips_net", "alex")
    _require(net in LPIPS_NETS, "metrics.lpips_net", f"got {net!r}; accepted values: {', '.join(LPIPS_NETS)}")
    weights = met.get("lpips_weights")
    return MetricsConfig(
        compute=tuple(dict.fromkeys(compute)),
        lpips_weights=None if weights is None else _string(weights, "metrics.lpips_weights"),
        lpips_net=net,
    )


def _resolution(value: Any, key: str) -> tuple[int, int]:
    # An int is a square size; [height, width] a rectangle.  Multiples of 16 fit the
    # VAE (8x) times the 2x2 patchify of both Flux and Qwen-Image.
    if isinstance(value, list):
        _require(len(value) == 2, key, f"must be an integer or [height, width], got {value!r}")
        h, w = (_int(v, key, 16) for v in value)
    else:
        h = w = _int(value, key, 16)
    _require(h % 16 == 0 and w % 16 == 0, key, f"must be a multiple of 16, got {value!r}")
    return h, w


# ------------------------------------------------------------------------- grid


def _canonical(value: Any) -> Any:
    # 1 and 1.0 are the same setting: give them the same config_id.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def config_id(conf: Mapping[str, Any]) -> str:
    """Stable 12-hex id of (model, policy, params, size, seed, steps, guidance)."""
    key = {k: conf[k] for k in ("model", "policy", "policy_params", "height", "width", "seed", "steps", "guidance_scale")}
    text = json.dumps(_canonical(key), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def config_label(policy: str, params: Mapping[str, Any]) -> str:
    """A short name for tables and plots: the policy and the parameters the configuration set."""
    def text(value: Any) -> str:
        return json.dumps(_canonical(value), separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)
    return " ".join([policy] + [f"{k}={text(v)}" for k, v in params.items()])


def expand_policy(spec: PolicySpec) -> list[dict[str, Any]]:
    """Parameter dicts of one policy: the product over its list-valued parameters."""
    keys = list(spec.params)
    axes = [v if isinstance(v, list) else [v] for v in spec.params.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]


def grid_policies(cfg: RunConfig) -> list[PolicySpec]:
    """The policies of the grid, with ``full`` added when vs-full metrics need it."""
    policies = list(cfg.policies)
    if "vs_full" in cfg.metrics.compute and not any(p.name == FULL_POLICY for p in policies):
        policies.insert(0, PolicySpec(FULL_POLICY, {}))
    return policies


def expand_grid(cfg: RunConfig) -> list[dict[str, Any]]:
    """All configurations (one dict each), ``full`` ones first, duplicates dropped."""
    variants = [(p.name, params) for p in grid_policies(cfg) for params in expand_policy(p)]
    variants.sort(key=lambda v: v[0] != FULL_POLICY)  # stable: reference outputs first
    out: dict[str, dict[str, Any]] = {}
    for model, (h, w), seed in itertools.product(cfg.models, cfg.resolutions, cfg.seeds):
        full_id = None
        for policy, params in variants:
            conf: dict[str, Any] = {
                "model": model.key,
                "model_name": model.name,
                "model_path": model.path,
                "model_options": dict(model.options),
                "policy": policy,
                "policy_params": params,
                "height": h,
                "width": w,
                "seed": seed,
                "steps": cfg.steps,
                "guidance_scale": cfg.guidance_scale,
            }
            conf["config_id"] = config_id(conf)
            conf["label"] = config_label(policy, params)
            if policy == FULL_POLICY and full_id is None:
                full_id = conf["config_id"]
            conf["full_config_id"] = full_id
            out.setdefault(conf["config_id"], conf)
    return list(out.values())
