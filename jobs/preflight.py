"""Checks a run config can do before any model work: each configuration's policy builds, each model is
asked only for sizes it was trained at, and the output lands where the user will look for it."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from pipeline.config import ActorConfig
    from pipeline.configuration import Configuration, ExpandedRun


def check_policies(configs: Sequence[Configuration]) -> None:
    import policies
    from pipeline.config import policy_kwargs

    for conf in configs:
        try:
            policy = policies.make(conf.policy, **policy_kwargs(conf))
        except (ValueError, TypeError) as err:
            raise ValueError(f"configuration {conf.label or conf.policy!r}: {err}") from None
        refusal = _family_refusal(conf.model_name, policy)
        if refusal:
            raise ValueError(f"configuration {conf.label or conf.policy!r}: {refusal}")
        if conf.budget_source and "budget" not in type(policy).model_fields:
            raise ValueError(f"configuration {conf.label!r}: policy {conf.policy!r} takes no per-step "
                             "budget, so it cannot take one from another configuration (budget_from)")


def _family_refusal(model_name: str, policy: object) -> str | None:
    """Why the model's family cannot run the policy's mechanisms (None for an unregistered name: loading says so)."""
    from actors.models import MODELS

    spec = MODELS.get(model_name)
    return None if spec is None else spec.family.refusal(policy.name, policy.needs, spec.pipeline.__name__)


def check_caches(configs: Sequence[Configuration]) -> None:
    """Every configuration's temporal cache (its own, or its policy's) builds (name, types, ranges) and can run
    the model's family at the configuration's steps, before Ray starts."""
    import policies
    from actors.caches import parse
    from pipeline.config import policy_kwargs

    for conf in configs:
        try:
            declared = policies.make(conf.policy, **policy_kwargs(conf)).needs.cache
            specs = [parse(dict(conf.cache)) if conf.cache is not None else None, parse(declared)]
            refusal = cache_refusal(specs, conf.model_name, conf.steps)
            if refusal:
                raise ValueError(refusal)
        except (ValueError, TypeError) as err:
            raise ValueError(f"configuration {conf.label!r}: {err}") from None


def cache_refusal(specs: Sequence[Any], model_name: str, steps: int) -> str | None:
    """Why one of these cache specs cannot run `model_name`'s family at `steps` steps (None: all can, or the
    model is unregistered and loading will say so)."""
    from actors.models import MODELS

    model = MODELS.get(model_name)
    refusals = [] if model is None else [s.refusal(model.family.name, steps) for s in specs if s is not None]
    return next((r for r in refusals if r), None)


def check_sizes(configs: Sequence[Configuration]) -> None:
    """Refuse sizes outside what a model's saved files say it was trained at (the toy model: 128x128)."""
    from actors.model_defaults import read_defaults
    from actors.models import shipped_folders

    for conf in configs:
        folder = conf.model_path or shipped_folders().get(conf.model_name)
        problem = read_defaults(folder).size_problem(conf.height, conf.width)
        if problem:
            raise ValueError(f"model {conf.model!r} at resolution {conf.width}x{conf.height}: {problem}; "
                             "change `resolutions` in the config")


def memory_problem(conf: Configuration, card_gb: float) -> str | None:
    """Why one edit of `conf` on a real checkpoint cannot fit a `card_gb` GiB card (costs.memory), or None.
    Tiny and shipped toy models are priced as their real architecture but are small: not checked."""
    from costs.memory import RESERVE_GIB
    from pipeline.pools import memory_need

    need = memory_need(conf)
    usable = card_gb - RESERVE_GIB
    if need is None or need.total <= usable:
        return None   # a refused mechanism is check_policies' to report, with its own reason
    return _memory_message(conf, need, card_gb, _memory_hint(conf, usable))


def _memory_hint(conf: Configuration, usable: float) -> str:
    """The model options that would make the edit fit (text encoders offloaded, the K/V buffers in int8)."""
    from pipeline.pools import memory_need

    options = dict(conf.model_options or {})
    for update, says in (({"text_encoders": "offload"}, "options.text_encoders: offload"),
                         ({"kv_store": "int8"}, "options.kv_store: int8"),
                         ({"text_encoders": "offload", "kv_store": "int8"},
                          "options.text_encoders: offload and options.kv_store: int8")):
        if all(options.get(k) == v for k, v in update.items()):
            continue
        need = memory_need(dataclasses.replace(conf, model_options={**options, **update}))
        if need is not None and need.total <= usable:
            return f"set the model's {says} (it then fits), "
    return ""


def _memory_message(conf: Configuration, need: Any, card_gb: float, hint: str) -> str:
    from costs.memory import RESERVE_GIB, describe

    return (f"configuration {conf.label!r} of model {conf.model!r} at {conf.width}x{conf.height} needs "
            f"{describe(need)} (costs.memory's estimate) and the card has {card_gb:g} GiB ({RESERVE_GIB:g} kept "
            f"free): {hint}set actors.card_gb to a larger card type the pool lands on (141: H200), or "
            "actors.big_card for the nodes that have one, or drop the configuration")


def check_buckets(configs: Sequence[Configuration]) -> None:
    """A model's `options.bucket` (actors.shape_buckets) is a token count or a share, before Ray starts."""
    from actors.shape_buckets import BucketError, ShapeBuckets

    for conf in configs:
        try:
            ShapeBuckets(bucket=(conf.model_options or {}).get("bucket") or 0)
        except BucketError as err:
            raise ValueError(f"model {conf.model!r}: options.{err}") from None


def check_memory(configs: Sequence[Configuration], actors: ActorConfig) -> None:
    """Every configuration's edit fits the GPU actors' card, or `actors.big_card` where one is configured (its
    resolution group then runs there: pipeline.pools), before Ray starts (CPU actors: nothing to check)."""
    if actors.num_gpus <= 0 or actors.card_gb is None:
        return
    for conf in configs:
        problem = memory_problem(conf, float(actors.card_gb))
        if problem and actors.big_card is not None:
            problem = memory_problem(conf, float(actors.big_card.card_gb))
        if problem:
            raise ValueError(problem)


def ray_job_working_dir() -> str | None:
    """The working_dir of the `ray job submit` this process is the entrypoint of, if any."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        return (json.loads(raw).get("runtime_env") or {}).get("working_dir")
    except (ValueError, AttributeError):
        return None


def check_output(output: str) -> None:
    """Under `ray job submit --working-dir`, a relative output would be written inside Ray's temporary copy
    of the working directory, where nobody looks and which Ray deletes: refuse it with the way out."""
    if "://" in output or os.path.isabs(os.path.expanduser(output)):
        return
    if ray_job_working_dir():
        raise ValueError(f"output {output!r} is relative, and this job runs in Ray's temporary copy of the "
                         "working directory: pass an absolute path or s3:// URI, e.g. "
                         "`--set output=$PWD/results` on the submitting machine")


def check_run(run: ExpandedRun) -> None:
    """Every check, on the run's one expansion of the grid."""
    check_output(run.config.output)
    check_policies(run.configurations)
    check_caches(run.configurations)
    check_buckets(run.configurations)
    check_sizes(run.configurations)
    check_memory(run.configurations, run.config.actors)
