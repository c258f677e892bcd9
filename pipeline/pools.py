"""The actor pools of a run, and how they share its GPUs.

A pool is one model entry's configurations on one card type: the run's (`actors.card_gb`) or, for each
(model, resolution) group in which some configuration's edit needs more memory than that card holds
(`costs.memory`), `actors.big_card`'s: a custom Ray resource only the bigger cards' nodes declare. A whole
resolution group moves, so that `full` and the policies it is paired with run on the same card type.

Pools run at once, in one Ray Data execution (the union of their graphs). `actors.max_size` GPUs are shared
among the standard pools and `big_card.max_size` among the big-card pools, in proportion to each pool's
estimated GPU work (the cost model's FLOPs of its configurations: every record runs every configuration),
at least one each. A pool's size is fixed at its share so that no pool can take another's GPUs, and pools
sized by their work finish about together. With fewer GPUs than pools of a card type (or with
`actors.pools: sequential`) the pools run one after the other, each with all of the type's GPUs.

Torch-free: the driver plans the pools from the model registry and the cost model's data."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .config import ActorConfig
from .configuration import Configuration, ExpandedRun
from .unit_plan import edit_weight

BIG = "@big_card"   # suffix of a big-card pool's name (a model entry's key plus it)
QUEUE_PER_GPU = 1   # units an actor holds per GPU, running and waiting (`graph.pool_strategy`; Ray Data's default: 2)


@dataclass(frozen=True)
class Pool:
    name: str                                    # the model entry's key (+ BIG on the bigger card)
    configs: tuple[Configuration, ...]
    actors: ActorConfig                          # this pool's min_size / max_size (its share of the GPUs)
    resources: dict[str, float] = field(default_factory=dict)   # custom Ray resources its actors ask for
    work_share: float = 1.0                      # its share of its card type's estimated work

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "configurations": len(self.configs), "min_size": self.actors.min_size,
                "max_size": self.actors.max_size, "resources": dict(self.resources),
                "work_share": round(self.work_share, 4)}


def memory_need(conf: Configuration) -> Any | None:
    """`costs.memory`'s estimate of one edit of `conf` on its real checkpoint (`.total` GiB), or None where
    nothing is checked: tiny and shipped toy models (small, though priced as their real architecture), models
    the registry lacks, and mechanisms `costs.memory` refuses (the policy checks report those)."""
    from actors.models import MODELS
    from costs.memory import POLICIES, config_memory

    spec = MODELS.get(conf.model_name)
    if spec is None or spec.tiny is not None or spec.shipped is not None:
        return None
    size = int(round((conf.height * conf.width) ** 0.5))
    policy = conf.policy if conf.policy in POLICIES else "full"   # gathers only shrink what a call holds
    options = conf.model_options or {}
    need = config_memory(conf.model_name, policy, (conf.cache or {}).get("name"), size,
                         options.get("text_encoders") == "offload", options.get("kv_store") == "int8")
    return None if need.refused else need


def exceeds(conf: Configuration, card_gb: float) -> bool:
    """Whether one edit of `conf` needs more than a `card_gb` GiB card leaves usable."""
    from costs.memory import RESERVE_GIB

    need = memory_need(conf)
    return need is not None and need.total > card_gb - RESERVE_GIB


def card_groups(configs: Sequence[Configuration], actors: ActorConfig
                ) -> tuple[tuple[Configuration, ...], tuple[Configuration, ...]]:
    """(standard card, big card): a (resolution, seed) group goes to the big card when one of its edits
    exceeds the run's card and a big card is configured (the preflight refused what fits neither)."""
    if actors.big_card is None or actors.card_gb is None or actors.num_gpus <= 0:
        return tuple(configs), ()
    big_groups = {(c.height, c.width, c.seed) for c in configs if exceeds(c, actors.card_gb)}
    big = tuple(c for c in configs if (c.height, c.width, c.seed) in big_groups)
    return tuple(c for c in configs if c not in big), big


def split_gpus(total: int, weights: Sequence[float]) -> list[int]:
    """`total` GPUs in proportion to `weights`, at least one each (`total` >= len(weights)): each GPU past the
    first ones goes to the pool furthest under its proportional share."""
    whole = sum(weights)
    ideal = [total * w / whole for w in weights]
    counts = [1] * len(weights)
    for _ in range(total - len(weights)):
        i = max(range(len(weights)), key=lambda j: ideal[j] - counts[j])
        counts[i] += 1
    return counts


def _weights(groups: Sequence[Sequence[Configuration]], weigh: Callable[[Configuration], float]) -> list[float]:
    """Each group's estimated work; by configuration count when the cost model does not know a model (its
    fallback weight is 1.0 per edit, not FLOPs)."""
    per = [[weigh(c) for c in g] for g in groups]
    if any(w <= 1.0 for ws in per for w in ws):
        return [float(len(g)) for g in groups]
    return [sum(ws) for ws in per]


def _sized(actors: ActorConfig, size: int, min_size: int) -> ActorConfig:
    return actors.model_copy(update={"max_size": size, "min_size": min(min_size, size), "big_card": None})


def _share(named: list[tuple[str, tuple[Configuration, ...]]], actors: ActorConfig, gpus: int, min_gpus: int,
           resources: dict[str, float], weigh: Callable[[Configuration], float]) -> list[Pool] | None:
    """One card type's pools with their shares of `gpus`, or None when there are fewer GPUs than pools."""
    if not named or len(named) > gpus:
        return [] if not named else None
    weights = _weights([c for _, c in named], weigh)
    maxes = split_gpus(gpus, weights)
    mins = split_gpus(min_gpus, weights) if min_gpus >= len(named) else [1] * len(named)
    whole = sum(weights)
    return [Pool(name, configs, _sized(actors, n, m), resources, w / whole)
            for (name, configs), n, m, w in zip(named, maxes, mins, weights)]


def plan_pools(run: ExpandedRun, weigh: Callable[[Configuration], float] = edit_weight) -> list[list[Pool]]:
    """The run's pools in waves: the pools of a wave run at once; the waves run one after the other."""
    actors = run.config.actors
    standard, big = [], []
    for key in run.model_keys():
        fits, needs_big = card_groups(run.of_model(key), actors)
        standard += [(key, fits)] if fits else []
        big += [(key + BIG, needs_big)] if needs_big else []
    big_card = actors.big_card
    big_resources = {big_card.resource: 1.0} if big_card is not None else {}
    if actors.pools == "concurrent":
        std_pools = _share(standard, actors, actors.max_size, actors.min_size, {}, weigh)
        big_pools = _share(big, actors, big_card.max_size, 1, big_resources, weigh) if big else []
        if std_pools is not None and big_pools is not None:
            return [std_pools + big_pools]
    whole = [Pool(name, configs, _sized(actors, actors.max_size, actors.min_size)) for name, configs in standard]
    if big:
        whole += [Pool(name, configs, _sized(actors, big_card.max_size, 1), big_resources) for name, configs in big]
    return [[pool] for pool in whole]


__all__ = ["BIG", "QUEUE_PER_GPU", "Pool", "card_groups", "exceeds", "memory_need", "plan_pools", "split_gpus"]
