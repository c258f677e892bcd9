"""A discrete-event model of the ablation's scheduling (no Ray, no sleeping): the same units, actor pool and
per-edit service times as `dropedit simulate`, with the streaming stages' overheads as a few parameters that
`simulation.calibrate` fits on the Ray runs. A PREDICTION, not a measurement.

What it models, as Ray Data runs the graph (`pipeline.graph`, Ray 2.60):
- units stream in input order; a record's configurations are one unit, or, when split into k parts (the last
  `split_records` records of the input, or all), k units: the reference (`full`) and every k-th other
  configuration in the first part, and each other part re-runs `full` once for its pairing (extra GPU work),
  or reads it back (`pairing="read_back"`: no extra work; the waits a part may have for it are not modelled);
- the driver hands units to the actor pool one after another (`dispatch_s` wall seconds each), each to the actor
  with the fewest units in flight (lowest index on a tie), at most `QUEUE` x K per actor (Ray Data's
  `max_tasks_in_flight_per_actor` default, 2 x max_concurrency K): a unit may wait behind a busy actor while
  another is idle, which lengthens the tail;
- an actor holds K GPUs (`gpus_per_actor`, 1 but in `dropedit simulate --gpus-per-actor K`) and runs its units
  in order, each on the first of its GPUs to free, taking its edits' service times plus `gap_s` wall seconds
  (the task's own overhead: inputs fetched, edits pickled, the ledger's call);
- `fixed_s` wall seconds per run: the pool's first dispatch after it is ready, and after the last unit the
  finish stage, the Parquet write and the executor's end (a constant start delay shifts every unit alike, so
  the two are one parameter);
- service times: the cost model's noiseless edit seconds times lognormal noise (sigma `noise`) and a 3x
  straggler with probability 2 %, as `simulation.synthetic_model` draws them; the pool has loaded at 0 and the
  makespan counts the model load `load_s` before it, as `simulation.cluster` does.

Overheads are wall seconds on the machine that ran the simulation; they count `1 / scale` simulated seconds
each (scale: wall seconds per simulated second of that run). At scale 1 they are real seconds."""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Sequence

import numpy as np

QUEUE = 2             # Ray Data's default max_tasks_in_flight_per_actor for an actor of max_concurrency 1
STRAGGLER_P = 0.02    # as simulation.synthetic_model: 2 % of edits take 3x
STRAGGLER_X = 3.0


@dataclass(frozen=True)
class Overheads:
    """The streaming stages' costs, in wall seconds of the machine that ran the simulation (fitted)."""

    dispatch_s: float = 0.0   # driver's time per unit handed to the pool (serial)
    gap_s: float = 0.0        # an actor's time per unit besides its edits
    fixed_s: float = 0.0      # once per run: the first dispatch's delay plus the end after the last unit

    def as_list(self) -> list[float]:
        return [self.dispatch_s, self.gap_s, self.fixed_s]


@dataclass(frozen=True)
class Scenario:
    """One run to predict. `edit_s`: one record's noiseless edit seconds per configuration, the reference
    (`full`) first. `split_parts` k, `split_records`: how many of the last records are split (None: all)."""

    gpus: int
    records: int
    edit_s: Sequence[float]
    load_s: float = 60.0
    noise: float = 0.15
    scale: float = 1.0
    split_parts: int = 1
    split_records: int | None = None
    queue: int = QUEUE          # units an actor holds at once (running and waiting), per GPU it holds
    gpus_per_actor: int = 1     # K logical GPUs per actor process, K units running at once
    pairing: str = "rerun"      # how split parts get `full`: "rerun" it, or "read_back" (no wait modelled)
    overheads: Overheads = field(default_factory=Overheads)

    def __post_init__(self) -> None:
        object.__setattr__(self, "edit_s", tuple(float(x) for x in self.edit_s))   # hashable: draws are cached


@dataclass(frozen=True)
class Prediction:
    """Model figures in simulated seconds, named as `dropedit simulate` names them."""

    gpus: int
    units: int
    makespan_s: float
    ideal_makespan_s: float
    gpu_busy: float
    extra_gpu_s_for_pairing: float
    load_s: float = 0.0

    @property
    def makespan_over_ideal(self) -> float:
        return self.makespan_s / self.ideal_makespan_s

    @property
    def makespan_after_load_over_ideal(self) -> float:
        """The scheduling's own makespan / ideal: the window after the model load, which no schedule shortens."""
        return (self.makespan_s - self.load_s) / self.ideal_makespan_s

    @property
    def gpu_busy_after_load(self) -> float:
        return 1.0 / self.makespan_after_load_over_ideal


def unit_parts(edit_s: Sequence[float], parts: int, read_back: bool = False) -> list[tuple[list[int], int]]:
    """One record's units as (configuration indices it runs, how many of them are pairing re-runs of index 0):
    the reference and every `parts`-th other configuration in the first, a re-run reference in each other
    (none when the parts read it back)."""
    others = list(range(1, len(edit_s)))
    parts = max(1, min(parts, len(others))) if others else 1
    out = []
    for p in range(parts):
        mine = others[p::parts]
        if p == 0:
            out.append(([0, *mine], 0))
        else:
            out.append((mine, 0) if read_back else ([0, *mine], 1))
    return out


def split_record_count(scenario: Scenario) -> int:
    if scenario.split_parts <= 1:
        return 0
    return scenario.records if scenario.split_records is None else min(scenario.split_records, scenario.records)


def draw_units(scenario: Scenario, seed: int) -> tuple[list[float], float, float]:
    """Noisy service seconds of every unit in stream order, the total editing seconds and the pairing share
    (numpy's generator seeded with `seed`: repeatable)."""
    rng = np.random.default_rng(seed)
    base = np.asarray(scenario.edit_s, dtype=float)
    split_n = split_record_count(scenario)
    parts = unit_parts(scenario.edit_s, scenario.split_parts, scenario.pairing == "read_back")
    reruns = sum(r for _, r in parts)
    columns = len(base) + (reruns if split_n else 0)   # a split record draws its re-run references too
    factor = np.exp(rng.normal(0.0, scenario.noise, (scenario.records, columns)))
    if scenario.noise > 0:
        factor *= np.where(rng.random((scenario.records, columns)) < STRAGGLER_P, STRAGGLER_X, 1.0)
    edits = factor * np.concatenate([base, np.full(columns - len(base), base[0])])
    whole = edits[: scenario.records - split_n, : len(base)].sum(axis=1)
    units = whole.tolist()
    pairing = 0.0
    if split_n:
        tail = edits[scenario.records - split_n:]
        extra = iter(range(len(base), columns))
        sums = []
        for indices, rerun in parts:   # a re-run reference takes its own draw, after the configurations'
            cols = [next(extra) if rerun and i == 0 else i for i in indices]
            sums.append(tail[:, cols].sum(axis=1))
        pairing = float(tail[:, len(base):].sum())
        units += np.stack(sums, axis=1).ravel().tolist()   # a record's parts one after another
    return units, float(sum(units)), pairing


@lru_cache(maxsize=64)
def _draws(scenario: Scenario, seeds: int) -> tuple[tuple[list[float], float, float], ...]:
    return tuple(draw_units(scenario, seed) for seed in range(seeds))


def schedule(units: Sequence[float], gpus: int, dispatch: float, gap: float, queue: int = QUEUE,
             per_actor: int = 1) -> float:
    """When the last unit ends (simulated seconds from the pool's start), dispatching as the module says:
    `gpus // per_actor` actors of `per_actor` GPUs, each holding at most `queue * per_actor` units."""
    actors, limit = max(gpus // per_actor, 1), queue * per_actor
    in_flight = [0] * actors
    servers = [[0.0] * per_actor for _ in range(actors)]   # per actor: a heap of its GPUs' free times
    by_load: list[list[int]] = [list(range(actors))] + [[] for _ in range(limit)]   # heaps of actor ids
    done: list[tuple[float, int]] = []   # (end, actor) of units in flight
    now, last = 0.0, 0.0

    def least_loaded() -> int | None:
        for level in range(limit):
            heap = by_load[level]
            while heap and in_flight[heap[0]] != level:   # stale entry: the actor moved level
                heapq.heappop(heap)
            if heap:
                return heap[0]
        return None

    def release(a: int) -> None:
        in_flight[a] -= 1
        heapq.heappush(by_load[in_flight[a]], a)

    for seconds in units:
        while done and done[0][0] <= now:
            release(heapq.heappop(done)[1])
        while (actor := least_loaded()) is None:   # every actor holds its limit: wait for a unit to end
            end, a = heapq.heappop(done)
            now = max(now, end)
            release(a)
        end = max(now, heapq.heappop(servers[actor])) + seconds + gap   # FIFO: the first GPU to free
        heapq.heappush(servers[actor], end)
        last = max(last, end)
        in_flight[actor] += 1
        heapq.heappush(by_load[in_flight[actor]], actor)
        heapq.heappush(done, (end, actor))
        now += dispatch
    return last


def predict(scenario: Scenario, seeds: int = 8) -> Prediction:
    """The model's figures, averaged over `seeds` draws of the service times (seed 0 onwards: repeatable)."""
    o, s = scenario.overheads, scenario.scale
    makespans, ideals, busies, extras, units = [], [], [], [], 0
    for drawn, total, pairing in _draws(replace(scenario, overheads=Overheads()), seeds):
        end = schedule(drawn, scenario.gpus, o.dispatch_s / s, o.gap_s / s, scenario.queue, scenario.gpus_per_actor)
        makespan = scenario.load_s + end + o.fixed_s / s
        makespans.append(makespan)
        ideals.append(total / scenario.gpus)
        busies.append(total / (scenario.gpus * makespan))
        extras.append(pairing)
        units = len(drawn)
    n = len(makespans)
    return Prediction(scenario.gpus, units, sum(makespans) / n, sum(ideals) / n, sum(busies) / n, sum(extras) / n,
                      scenario.load_s)


def with_gpus(scenario: Scenario, gpus: int, scale: float | None = None) -> Scenario:
    """The same run on another pool size (and scale, if given)."""
    return replace(scenario, gpus=gpus, scale=scenario.scale if scale is None else scale)
