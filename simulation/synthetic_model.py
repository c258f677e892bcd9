"""A SYNTHETIC stand-in for the editing model, for `dropedit simulate`: it edits nothing. It sleeps, scaled down,
for the time the cost model (`costs`) gives the configuration on the real architecture at an assumed
GPU throughput, with heavy-tailed noise, after a model-load sleep; its "edit" is the source image itself.

Everything else is the real graph: `SimulatedEditActor` is a `pipeline.unit_stage.UnitActor`, so unit order,
pairing, error rows, the CPU stages, writes, resume and Ray's actor restarts are the ones `dropedit run` uses.
A `SimLedger` actor counts model loads and GPU-seconds, and hands out actor kills at chosen simulated times.
Here the actors' processes start one after the other (a few cores start them all), on a cluster they start
together: each synthetic actor therefore waits, after its load, until the pool's first `expected` actors have
loaded, and the simulation's clock starts then (`all_ready`). A restarted actor does not wait."""
from __future__ import annotations

import math
import os
import random
import time
from typing import Any, Mapping, Sequence

import ray

from pipeline.configuration import Configuration
from pipeline.unit_stage import UnitActor, UnitEdit
from pipeline.records import policy_params_json

from costs import edit_cost, gpu_seconds
from costs.flops import image_tokens

NOMINAL_KEEP = 0.5   # assumption for policies whose keep ratio is adaptive (TokenDrop, ToPi mass, SpotEdit)
KEEP_PARAMS = ("ratio", "keep")   # parameters that fix a configuration's keep ratio


@ray.remote(num_cpus=0)
class SimLedger:
    """Counts of one simulation, in simulated seconds: model loads, editing GPU-seconds, and the kill plan."""

    def __init__(self, kill_at: list[float], expected: int) -> None:
        self.kill_at, self.expected = sorted(kill_at), expected
        self.start = time.time()   # reset when the pool is ready: actors compare their clocks with it
        self.loads, self.busy, self.killed = 0, 0.0, 0
        self.all_ready: float | None = None

    def loaded(self) -> tuple[float, float | None]:
        """Counts a model load; returns the simulation's start and this actor's kill time (simulated seconds,
        None: it lives). The first actors to load take the planned kills, one each."""
        self.loads += 1
        if self.loads == self.expected:
            self.all_ready = self.start = time.time()
        return self.kill_at.pop(0) if self.kill_at else None

    def started(self) -> float | None:
        """The simulation's start (wall clock) once the whole pool has loaded, else None."""
        return self.all_ready

    def worked(self, seconds: float) -> None:
        self.busy += seconds

    def died(self) -> None:
        self.killed += 1

    def counts(self) -> dict[str, Any]:
        return {"model_loads": self.loads, "busy_s": self.busy, "actor_kills": self.killed,
                "all_ready": self.all_ready}


def nominal_keep(config: Configuration) -> float:
    if config.policy == "full":
        return 1.0
    params = config.policy_params
    return next((float(params[k]) for k in KEEP_PARAMS if isinstance(params.get(k), (int, float))), NOMINAL_KEEP)


def edit_seconds(config: Configuration, tflops: float) -> float:
    """Cost-model time of one edit on the real architecture of the config's model, at `tflops` TFLOP/s."""
    cost = edit_cost(config.model_name, config.height, config.width, config.steps, config.guidance_scale,
                     keep=nominal_keep(config))
    return gpu_seconds(cost.flops, tflops)


class SimulatedEditActor(UnitActor):
    """The GPU stage with the synthetic model (see the module docstring)."""

    def __init__(self, configs: dict[str, dict[str, Any]], run_id: str, ledger: str, tflops: float,
                 load_s: float, scale: float, noise: float) -> None:
        super().__init__(configs, run_id)
        self.ledger = ray.get_actor(ledger)
        self.scale, self.noise = scale, noise
        self.cost = {cid: edit_seconds(c, tflops) for cid, c in self.configs.items()}
        self.rng = random.Random(f"{self.actor}-{time.time_ns()}")
        self.device = f"synthetic GPU ({tflops:g} TFLOP/s)"
        time.sleep(load_s * scale)
        # a few calls per actor, none per edit: the ledger's latency would be scaled up too
        self.kill_at = ray.get(self.ledger.loaded.remote())
        while (start := ray.get(self.ledger.started.remote())) is None:
            time.sleep(0.05)
        self.start = start

    def _noisy(self, seconds: float) -> float:
        # lognormal jitter plus a 2 % chance of a 3x straggler: the heavy tail a cluster shows
        factor = math.exp(self.rng.gauss(0.0, self.noise))
        return seconds * factor * (3.0 if self.rng.random() < 0.02 * (self.noise > 0) else 1.0)

    def edit(self, config: Configuration, inputs: dict[str, Any], unit: Mapping[str, Any],
             budget: list[int] | None) -> UnitEdit:
        from pipeline.records import utcnow

        started = utcnow()
        seconds = self._noisy(self.cost[config.config_id])
        if self.kill_at is not None and (time.time() - self.start) / self.scale >= self.kill_at:
            time.sleep(seconds * self.scale / 2)
            self.ledger.worked.remote(seconds / 2)
            ray.get(self.ledger.died.remote())
            os._exit(1)   # the actor dies mid-edit, as a lost node would: Ray restarts it, Ray Data retries
        time.sleep(seconds * self.scale)
        self.ledger.worked.remote(seconds)   # fire and forget
        n = image_tokens(config.height, config.width)
        kept = budget or [round(nominal_keep(config) * n)] * config.steps
        row = self.ok_row(config, unit, started)
        row.update(runtime_s=seconds, loop_s=seconds, keep_ratio_mean=sum(kept) / (n * len(kept)),
                   kept_per_step=kept, tokens_processed=sum(kept), query_ratio_mean=1.0,
                   policy_applied=policy_params_json(config.policy_params))
        return UnitEdit(config, row, emit=True, image=inputs["source"], kept_per_step=kept)


def simulated_factory(ledger: str, tflops: float, load_s: float, scale: float, noise: float):
    """A `pipeline.graph.ActorFactory` that gives every model entry the synthetic model."""
    def factory(configs: Sequence[Configuration], cfg: Any, run_id: str) -> tuple[type, dict[str, Any]]:
        rows = {c.config_id: c.to_row() for c in configs}   # what crosses Ray: plain rows
        return SimulatedEditActor, dict(configs=rows, run_id=run_id, ledger=ledger,
                                        tflops=tflops, load_s=load_s, scale=scale, noise=noise)
    return factory
