"""Run configuration: YAML -> validated pydantic models -> the ablation grid (`expand_run`: the typed, frozen
`pipeline.configuration.ExpandedRun`, built once per run). `--set` overrides follow `core.assignments`.

Errors name the offending key (dotted path) and, where there is a fixed set, the
accepted values (pipeline.validation turns pydantic's errors into such lines).
Credentials are refused anywhere in the config: S3 access comes only from the
standard AWS credential chain.

Grid: models x policies (every list-valued policy parameter is a grid axis) x
resolutions x seeds.  To pass a list as ONE parameter value, wrap it in another
list (``layers: [[3, 7, 11]]``).  When the ``vs_full`` metrics are requested and
no ``full`` policy is listed, the grid adds ``full`` (no parameters) so that every
(model, size, seed) has the reference output the fidelity metrics compare to; each
configuration carries the ``full_config_id`` of that reference.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Annotated, Any, Collection, Literal, Mapping, Sequence, get_args

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

import metrics
from core.assignments import AssignmentError, apply_assignments
from core.resources import locate
from pipeline import storage as st
from pipeline.configuration import Configuration, ExpandedRun, config_id, config_label
from pipeline.model_spec import KV_STORES, MODEL_OPTIONS, TEXT_ENCODER_PLACEMENTS, ModelSpec  # noqa: F401
from pipeline.units_config import UnitsConfig
from pipeline.validation import (
    FieldError,
    NonEmptyStr,
    Number,
    Section,
    describe,
    empty_if_none,
    one_or_more,
)

FULL_POLICY = "full"
MetricGroup = Literal[tuple(m.name for m in metrics.registered())]   # the registered metrics (metrics/)
JudgeProtocolName = Literal["viescore", "imgedit"]
JudgeBackend = Literal["endpoint", "local"]
LpipsNet = Literal[metrics.lpips.LPIPS_NETS]
ResizeFilter = Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]   # PIL's, lower case
InputFormat = Literal["auto", "manifest", "pie", "gedit", "imgedit"]
METRIC_GROUPS = get_args(MetricGroup)
LPIPS_NETS = get_args(LpipsNet)
INPUT_FORMATS = get_args(InputFormat)


class ConfigError(ValueError):
    """A config value that cannot be used; the message starts with its dotted key."""


# --------------------------------------------------------------------- sections

OneOrMore = BeforeValidator(one_or_more)
NotEmpty = Field(min_length=1)
EmptyIfNone = BeforeValidator(empty_if_none)
Options = Annotated[dict[str, Any], EmptyIfNone]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegative = Annotated[Number, Field(ge=0)]


def _resolution(value: Any) -> tuple[int, int]:
    # An int is a square size; [height, width] a rectangle.  Multiples of 16 fit the
    # VAE (8x) times the 2x2 patchify of both Flux and Qwen-Image.
    sides = value if isinstance(value, (list, tuple)) else [value, value]
    if len(sides) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in sides):
        raise ValueError(f"must be an integer or [height, width], got {value!r}")
    if any(v < 16 or v % 16 for v in sides):
        raise ValueError(f"must be a multiple of 16 (at least 16), got {value!r}")
    return sides[0], sides[1]


Resolution = Annotated[tuple[int, int], BeforeValidator(_resolution)]


class InputConfig(Section):
    uri: NonEmptyStr
    format: InputFormat = "auto"
    options: Options = {}  # reader kwargs (image_root, ...)

    @model_validator(mode="before")
    @classmethod
    def _uri_shorthand(cls, data: Any) -> Any:
        return {"uri": data} if isinstance(data, str) else data  # just the URI, format detected


class PolicySpec(Section):
    name: NonEmptyStr
    params: dict[str, Any] = {}  # list values = grid axes

    def __init__(self, name: str | None = None, params: Mapping[str, Any] | None = None, **data: Any) -> None:
        # positional, as the grid and callers write it: PolicySpec("full", {}); pydantic calls it too, with
        # keywords, for each policy of a config (a missing name arrives as None and is refused as such)
        super().__init__(name=name, params=dict(params or {}), **data)


def _policy_entries(value: Any) -> Any:
    """YAML writes a policy as ``{name, **params}`` or a bare name; the model keeps params apart."""
    entries = []
    for i, entry in enumerate(one_or_more(value)):
        if isinstance(entry, str):
            entry = {"name": entry}
        if isinstance(entry, Mapping):
            params = {k: v for k, v in entry.items() if k != "name"}
            for key, axis in params.items():
                if isinstance(axis, list) and not axis:
                    raise FieldError(f"{i}.{key}", "empty list expands to no configurations")
            entry = {**({"name": entry["name"]} if "name" in entry else {}), "params": params}
        entries.append(entry)
    return entries


class BigCardConfig(Section):
    """A bigger card type some GPU nodes have (`pipeline.pools`): the (model, resolution) groups whose edit
    needs more than `actors.card_gb` run in their own pool there instead of being refused."""

    card_gb: Annotated[Number, Field(gt=0)] = 141.0   # 141: H200
    resource: NonEmptyStr = "big_card"   # a custom Ray resource only those nodes declare (cluster.yaml)
    max_size: PositiveInt = 1   # such cards the run may hold, shared by its big-card pools


class ActorConfig(Section):
    num_gpus: NonNegative = 1.0
    num_cpus: NonNegative = 1.0
    # GiB of the card the GPU actors land on (80: A100/H100 80 GB, 141: H200): a configuration whose one edit
    # needs more (costs.memory, the real checkpoint's architecture) is refused before the run; None: unchecked
    card_gb: Annotated[Number, Field(gt=0)] | None = 80.0
    big_card: BigCardConfig | None = None
    # several pools (model entries, card types): `concurrent` shares max_size GPUs among them by their estimated
    # work in one execution (pipeline.pools); `sequential` gives each all of them, one pool after the other
    pools: Literal["concurrent", "sequential"] = "concurrent"
    min_size: PositiveInt = 1
    max_size: PositiveInt = 1  # defaults to min_size: one number sizes a fixed pool
    batch_size: PositiveInt = 1
    # units an actor process runs at once, one per GPU it holds: 1 for the real editor (one model, one card);
    # `dropedit simulate --gpus-per-actor K` serves K logical GPUs from one light process (num_gpus K)
    concurrency: PositiveInt = 1

    @model_validator(mode="before")
    @classmethod
    def _max_defaults_to_min(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or "max_size" in data:
            return data
        size = data.get("min_size")
        ok = isinstance(size, int) and size >= 1  # a bad min_size is reported once, not again as max_size
        return {**data, "max_size": size} if ok else data

    @model_validator(mode="after")
    def _ordered(self) -> "ActorConfig":
        if self.max_size < self.min_size:
            raise FieldError("max_size", f"must be >= actors.min_size ({self.min_size})")
        return self


class JudgeConfig(Section):
    """The VLM judge (metrics.judge): an OpenAI-compatible endpoint or a local Qwen2.5-VL folder."""

    protocol: JudgeProtocolName = "viescore"   # GEdit-Bench's VIEScore (SC, PQ, O) or ImgEdit's 1-5 rubric
    backend: JudgeBackend = "endpoint"
    base_url: NonEmptyStr | None = None     # endpoint: e.g. http://host:8000/v1
    model: NonEmptyStr | None = None        # endpoint: the served model's name
    api_key_env: NonEmptyStr | None = None  # endpoint: NAME of the environment variable holding the key
    path: NonEmptyStr | None = None         # local: folder or s3:// prefix (synced like model paths)
    max_attempts: PositiveInt = 4
    timeout_s: Annotated[Number, Field(gt=0)] = 120.0
    backoff_s: NonNegative = 2.0
    max_tokens: PositiveInt = 512

    @model_validator(mode="before")
    @classmethod
    def _no_key(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "api_key" in data:   # never echoed: it may be a real key
            raise FieldError("api_key", "the key must not be in the config; name its environment variable in "
                                        "api_key_env")
        return data

    @field_validator("api_key_env")
    @classmethod
    def _variable_name(cls, name: str | None) -> str | None:
        if name is not None and not name.replace("_", "a").isalnum():   # a pasted key is not echoed either
            raise ValueError("must be the name of an environment variable (letters, digits, _), not the key")
        return name

    @model_validator(mode="after")
    def _backend_fields(self) -> "JudgeConfig":
        needed = ("base_url", "model") if self.backend == "endpoint" else ("path",)
        for name in needed:
            if getattr(self, name) is None:
                raise FieldError(name, f"is required for backend {self.backend!r}")
        return self


class MetricsConfig(Section):
    # ``compute: []`` switches every metric off; a missing key means all of them.
    compute: Annotated[tuple[MetricGroup, ...], OneOrMore] = METRIC_GROUPS
    lpips_weights: NonEmptyStr | None = None  # torchvision backbone .pth (file or folder)
    lpips_net: LpipsNet = "squeeze"   # PIE-Bench's trunk (torchmetrics net_type="squeeze")
    clip_model: NonEmptyStr | None = None   # local folder or s3:// prefix of a CLIPModel + CLIPProcessor
    dino_model: NonEmptyStr | None = None   # local folder or s3:// prefix of a ViTModel (DINO ViT-B/8)
    judge: JudgeConfig | None = None        # None: no judge (judge_* columns null, judge_status says why)
    # where the edit-stage metric models (CLIP, DINO, LPIPS, the judge) live: on the editor's device, or in the
    # actor's host memory ("cpu"), off the editing card (slower scoring, no card memory)
    device: Literal["editor", "cpu"] = "editor"

    @field_validator("compute")
    @classmethod
    def _once_each(cls, compute: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(compute))


def _text(value: Any) -> Any:
    return None if value is None else str(value)  # run_id: 7 names the run "7"


class RunConfig(Section):
    # field order is the order "accepted keys" lists them in
    run_id: Annotated[NonEmptyStr | None, BeforeValidator(_text)] = None
    input: InputConfig
    output: NonEmptyStr
    models: Annotated[tuple[ModelSpec, ...], OneOrMore, NotEmpty]
    policies: Annotated[tuple[PolicySpec, ...], BeforeValidator(_policy_entries), NotEmpty]
    # temporal caches (actors.caches) composed with every policy: a grid axis; `none` = no cache (the default)
    caches: Annotated[tuple[PolicySpec, ...], BeforeValidator(_policy_entries)] = ()
    resolutions: Annotated[tuple[Resolution, ...], OneOrMore, NotEmpty] = ((1024, 1024),)  # (height, width)
    seeds: Annotated[tuple[StrictInt, ...], OneOrMore, NotEmpty] = (0,)
    # None: the model family's paper protocol (Kontext 28 steps, guidance 3.5; Qwen-Image-Edit 50 steps, true
    # CFG 4.0), resolved per model in expand_grid so that rows and config_ids carry what ran
    steps: PositiveInt | None = None
    guidance_scale: NonNegative | None = None
    # PIL filter of the source resize to the edit size; None: the family's (Kontext bicubic, as TokenDrop's
    # protocol; Qwen-Image-Edit Lanczos, as its pipeline)
    resize_filter: ResizeFilter | None = None
    storage: Annotated[st.StorageConfig, EmptyIfNone] = st.StorageConfig()
    actors: Annotated[ActorConfig, EmptyIfNone] = ActorConfig()
    units: Annotated[UnitsConfig, EmptyIfNone] = UnitsConfig()
    metrics: Annotated[MetricsConfig, EmptyIfNone] = MetricsConfig()
    model_cache_dir: NonEmptyStr = "~/.cache/dropedit/models"

    @field_validator("models")
    @classmethod
    def _distinct_keys(cls, models: tuple[ModelSpec, ...]) -> tuple[ModelSpec, ...]:
        # the same name may appear with another path or options (a fine-tuned copy, a LoRA) under its own
        # label: the label is the `model` column of the rows, so the entries' results stay apart
        keys = [m.key for m in models]
        for i, key in enumerate(keys):
            if keys.count(key) > 1:
                raise FieldError(f"{i}.label", f"{key!r} names more than one model entry; "
                                               "give entries that share a name distinct labels")
        return models

    @field_validator("policies")
    @classmethod
    def _known_policies(cls, policies: tuple[PolicySpec, ...], info: ValidationInfo) -> tuple[PolicySpec, ...]:
        # here, not in PolicySpec: a model with its own __init__ is validated without the context
        known = (info.context or {}).get("known_policies")
        for i, policy in enumerate(policies):
            if known is not None and policy.name not in known:
                raise FieldError(f"{i}.name", f"unknown policy {policy.name!r}; "
                                              f"accepted values: {', '.join(sorted(known))}")
        return policies

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


# ---------------------------------------------------------------------- loading


def load_config(
    uri: str,
    overrides: Sequence[str] = (),
    known_policies: Collection[str] | None = None,
) -> RunConfig:
    """Read a YAML config (local or s3://), apply ``--set`` overrides, validate. A local path that is not
    there but names a shipped file (`configs/demo.yaml` from another folder) is that file; so is the input."""
    if "://" not in uri:
        uri = str(locate(uri))
    raw = yaml.safe_load(st.read_bytes(uri).decode("utf-8"))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{uri}: the config must be a YAML mapping")
    return parse_config(_shipped_input(apply_overrides(raw, overrides)), known_policies=known_policies)


def _shipped_input(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with a relative local input that is not in the working folder but ships with dropedit (the demo's
    records) pointed at the shipped copy (`core.resources.locate`)."""
    given = raw.get("input")
    uri = given.get("uri") if isinstance(given, dict) else given
    if not isinstance(uri, str) or "://" in uri:
        return raw
    found = str(locate(uri))
    if found == uri:
        return raw
    return {**raw, "input": {**given, "uri": found} if isinstance(given, dict) else found}


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each dotted ``key=value`` applied (`core.assignments`' rules)."""
    try:
        return apply_assignments(raw, overrides)
    except AssignmentError as exc:
        raise ConfigError(str(exc)) from None


# ------------------------------------------------------------------- validation


def _reject_credentials(node: Any, path: str = "") -> None:
    # before pydantic sees the config: its errors echo input values, and a secret must never be echoed
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


def parse_config(raw: Mapping[str, Any], known_policies: Collection[str] | None = None) -> RunConfig:
    """Validate a raw config mapping; ``known_policies`` (if given) restricts policy names."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: must be a mapping, got {type(raw).__name__}")
    _reject_credentials(raw)
    try:
        return RunConfig.model_validate(dict(raw), context={"known_policies": known_policies})
    except ValidationError as exc:
        raise ConfigError(describe(exc, RunConfig)) from None


# ------------------------------------------------------------------------- grid


def expand_policy(spec: PolicySpec) -> list[dict[str, Any]]:
    """Parameter dicts of one policy: the product over its list-valued parameters."""
    keys = list(spec.params)
    axes = [v if isinstance(v, list) else [v] for v in spec.params.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]


NO_CACHE = "none"


def grid_caches(cfg: RunConfig) -> list[dict[str, Any] | None]:
    """The cache axis: None (no cache) first, then each cache's parameter combinations as {"name", **params}.
    No cache is always there when vs-full metrics need the uncached `full` as the reference."""
    out: list[dict[str, Any] | None] = []
    for spec in cfg.caches:
        out += [None] if spec.name == NO_CACHE else [{"name": spec.name, **p} for p in expand_policy(spec)]
    if not out or ("vs_full" in cfg.metrics.compute and None not in out):
        out.insert(0, None)
    return list({json.dumps(c, sort_keys=True): c for c in out}.values())


def cache_label(cache: Mapping[str, Any] | None) -> str | None:
    """A cache's name for tables and rows, e.g. "magcache threshold=0.25"; None without a cache."""
    return None if cache is None else config_label(str(cache["name"]), {k: v for k, v in cache.items() if k != "name"})


def grid_policies(cfg: RunConfig) -> list[PolicySpec]:
    """The policies of the grid, with ``full`` added when vs-full metrics need it."""
    policies = list(cfg.policies)
    if "vs_full" in cfg.metrics.compute and not any(p.name == FULL_POLICY for p in policies):
        policies.insert(0, PolicySpec(FULL_POLICY, {}))
    return policies


def sampling(cfg: RunConfig, model: ModelSpec) -> dict[str, Any]:
    """steps, guidance_scale and resize_filter the model entry runs: the config's, else its family's paper
    protocol (`actors.models.protocol_of`: registry data, no torch or diffusers import). An unknown model name
    keeps None (preflight refuses the name)."""
    chosen = {"steps": cfg.steps, "guidance_scale": cfg.guidance_scale, "resize_filter": cfg.resize_filter}
    if None in chosen.values():
        from actors.models import protocol_of

        proto = protocol_of(model.name, model.path) or {}
        chosen = {k: proto.get(k) if v is None else v for k, v in chosen.items()}
    return chosen


BUDGET_FROM = "budget_from"   # a policy parameter: another configuration's label, whose per-step kept counts
                              # for the same record become this one's budget (TokenDrop's matched random arm)


def policy_kwargs(conf: Configuration, budget: Sequence[int] | None = None) -> dict[str, Any]:
    """The policy's own parameters of a configuration: `budget_from` resolved into `budget` when given."""
    params = {k: v for k, v in conf.policy_params.items() if k != BUDGET_FROM}
    if budget is not None:
        params["budget"] = list(budget)
    return params


def _label_key(label: str) -> tuple[str, ...]:
    """A label with its parameters in any order (a config rewritten with sorted keys names the same one)."""
    policy, *params = label.split(" ")
    return (policy, *sorted(params))


def resolve_budgets(group: Sequence[Configuration]) -> list[Configuration]:
    """The group (same model, size, seed) with each configuration that has `budget_from` pointed at the
    configuration of that label: `budget_source` is its config_id. The graph runs sources first."""
    labels = {_label_key(c.label): c for c in group}
    out = []
    for conf in group:
        wanted = conf.policy_params.get(BUDGET_FROM)
        if wanted is not None:
            source = labels.get(_label_key(str(wanted)))
            if source is None:
                raise ConfigError(f"policies: {BUDGET_FROM} {wanted!r} of {conf.label!r} names no configuration; "
                                  f"accepted: {', '.join(sorted(c.label for c in group))}")
            if BUDGET_FROM in source.policy_params:
                raise ConfigError(f"policies: {BUDGET_FROM} of {conf.label!r} names {source.label!r}, which "
                                  f"takes its own budget from another configuration; name one that does not")
            conf = dataclasses.replace(conf, budget_source=source.config_id)
        out.append(conf)
    return out


def _configuration(model: ModelSpec, policy: str, params: dict[str, Any], cache: dict[str, Any] | None,
                   size: tuple[int, int], seed: int, protocol: Mapping[str, Any], resize_filter: str | None,
                   full_id: str | None) -> Configuration:
    """One grid point; `full_id`: its group's reference so far (None: this one, if it is the uncached full)."""
    identity = {"model": model.key, "policy": policy, "policy_params": params, "height": size[0],
                "width": size[1], "seed": seed, "steps": protocol["steps"],
                "guidance_scale": protocol["guidance_scale"], "cache": cache}
    cid = config_id(identity, resize_filter)
    if policy == FULL_POLICY and cache is None and full_id is None:
        full_id = cid
    label = cache_label(cache)
    return Configuration(
        model=model.key, model_name=model.name, model_path=model.path, model_options=dict(model.options),
        policy=policy, policy_params=params, height=size[0], width=size[1], seed=seed,
        steps=protocol["steps"], guidance_scale=protocol["guidance_scale"], resize_filter=protocol["resize_filter"],
        cache=cache, cache_label=label, config_id=cid,
        label=config_label(policy, params) + (f" + {label}" if cache else ""), full_config_id=full_id)


def expand_grid(cfg: RunConfig) -> list[Configuration]:
    """All configurations, ``full`` ones first, duplicates dropped. A run builds them once (`expand_run`)."""
    variants = [(p.name, params, cache) for cache in grid_caches(cfg)
                for p in grid_policies(cfg) for params in expand_policy(p)]
    variants.sort(key=lambda v: (v[0] != FULL_POLICY or v[2] is not None))  # stable: the reference first
    out: dict[str, Configuration] = {}
    protocols = {model.key: sampling(cfg, model) for model in cfg.models}
    for model, size, seed in itertools.product(cfg.models, cfg.resolutions, cfg.seeds):
        full_id, group = None, []
        for policy, params, cache in variants:
            conf = _configuration(model, policy, params, cache, size, seed, protocols[model.key],
                                  cfg.resize_filter, full_id)
            full_id = conf.full_config_id
            group.append(out.setdefault(conf.config_id, conf))
        for conf in resolve_budgets(group):
            out[conf.config_id] = conf   # a duplicate (same id) resolves the same: the position stays the first
    return list(out.values())


def expand_run(cfg: RunConfig) -> ExpandedRun:
    """The run: the config with its configurations, expanded once for preflight, the dry run and the graph."""
    return ExpandedRun(cfg, tuple(expand_grid(cfg)))
