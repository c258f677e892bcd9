"""A SYNTHETIC stand-in for the editing model, for `dropedit simulate`: it edits nothing. It sleeps, scaled down,
for the time the cost model gives the configuration on the real architecture at an assumed GPU throughput
(`simulation.service_times`, computed once on the driver and handed in), with heavy-tailed noise, after a
model-load sleep; its "edit" is the source image itself.

Light on purpose: this module imports Ray and `pipeline.unit_stage` (numpy, pyarrow, pydantic) and nothing of
`costs`, `actors`, torch or diffusers, so an actor process holds ~100 MB and 256 of them fit a 24 GiB machine
(tests/test_simulate.py checks the import set in a fresh interpreter).

Everything else is the real graph: `SimulatedEditActor` is a `pipeline.unit_stage.UnitActor`, so unit order,
pairing, error rows, the CPU stages, writes, resume and Ray's actor restarts are the ones `dropedit run` uses.
A `SimLedger` actor counts model loads, GPU-seconds and units, keeps a per-unit trace, and hands out actor and
node kills at chosen simulated times.

`slots` K > 1 (`dropedit simulate --gpus-per-actor K`): one process serves K logical GPUs. Ray gives the actor
`num_gpus=K` (its GPU accounting stays exact) and Ray Data runs up to K of its units at once on the actor's
threads (2 K in flight, one queue for the K); each running unit holds one logical GPU (a slot) for its whole
unit and sleeps its own service times there. What differs from K processes of one GPU: the queue of waiting
units is shared by the K GPUs (a unit starts on whichever of them frees first), a model load counts K (one per
logical GPU, loaded in one sleep, as K processes loading in parallel would), and a killed actor takes its K
GPUs' units with it (a node kill, whose node holds whole actors, is unchanged). Here the actors' processes start one after the other (a few cores start
them all), on a cluster they start together: each synthetic actor therefore waits, after its load, until the
pool's first `expected` actors have loaded, and the simulation's clock starts then (`all_ready`). A restarted
actor does not wait."""
from __future__ import annotations

import math
import os
import random
import threading
import time
from typing import Any, Mapping

import ray

from pipeline.configuration import Configuration
from pipeline.records import policy_params_json, utcnow
from pipeline.unit_stage import UnitActor, UnitEdit

from simulation.ledger import SimLedger

__all__ = ["SimLedger", "SimulatedEditActor"]


class SimulatedEditActor(UnitActor):
    """The GPU stage with the synthetic model (see the module docstring).

    `service`: config id -> (noiseless edit seconds, image tokens, nominal keep ratio), from
    `simulation.service_times.service_table`."""

    def __init__(self, configs: dict[str, dict[str, Any]], run_id: str, ledger: str, service: dict[str, list],
                 device: str, load_s: float, scale: float, noise: float, slots: int = 1, output: str | None = None,
                 storage: dict[str, Any] | None = None, pairing: str = "read_back") -> None:
        super().__init__(configs, run_id, output=output, storage=storage, pairing=pairing)
        self.ledger = ray.get_actor(ledger)
        self.scale, self.noise, self.device = scale, noise, device
        self.service = {cid: (float(s), int(n), float(k)) for cid, (s, n, k) in service.items()}
        self.rng = random.Random(f"{self.actor}-{time.time_ns()}")
        self.free_slots, self.slot_lock = list(range(slots)), threading.Lock()
        self.unit = threading.local()   # the running unit's books: one per thread, i.e. per logical GPU
        time.sleep(load_s * scale)
        # a few calls per actor and one per unit, none per edit: the ledger's latency would be scaled up too
        self.kill_at, self.node = ray.get(self.ledger.loaded.remote(slots))
        while (start := ray.get(self.ledger.started.remote())) is None:
            time.sleep(0.05)
        self.start = start

    def _now(self) -> float:
        """Simulated seconds since the pool was ready."""
        return (time.time() - self.start) / self.scale

    def to_wall(self, seconds: float) -> float:
        return seconds * self.scale

    def waited(self, wall_s: float) -> float:
        """A wait for a reference holds the GPU idle: pairing time, not editing (`busy`)."""
        seconds = wall_s / self.scale
        self.unit.pairing += seconds
        return seconds

    def _noisy(self, seconds: float) -> float:
        # lognormal jitter plus a 2 % chance of a 3x straggler: the heavy tail a cluster shows
        factor = math.exp(self.rng.gauss(0.0, self.noise))
        return seconds * factor * (3.0 if self.rng.random() < 0.02 * (self.noise > 0) else 1.0)

    def _die_if_due(self, seconds: float) -> None:
        """An actor kill is due at the first edit after its time; a node kill lands inside the edit that spans
        it (an idle actor of that node dies at its next edit). Either way the process exits mid-edit, as on a
        lost machine: Ray restarts the actor, Ray Data redoes its unit."""
        now = self._now()
        if self.kill_at is not None and now >= self.kill_at:
            part, node = seconds / 2, None
        elif self.node is not None and self.node[1] is not None and now + seconds >= self.node[1]:
            part, node = max(self.node[1] - now, 0.0), self.node[0]
        else:
            return
        time.sleep(part * self.scale)
        ray.get(self.ledger.died.remote(self.unit.busy + part, node))
        os._exit(1)

    def edit(self, config: Configuration, inputs: dict[str, Any], unit: Mapping[str, Any],
             budget: list[int] | None) -> UnitEdit:
        started = utcnow()
        base, tokens, keep = self.service[config.config_id]
        seconds = self._noisy(base)
        self._die_if_due(seconds)
        time.sleep(seconds * self.scale)
        self.unit.busy += seconds
        if config.config_id not in unit["config_ids"]:   # run only as the unit's reference: pairing's cost
            self.unit.pairing += seconds
        kept = budget or [round(keep * tokens)] * config.steps
        row = self.ok_row(config, unit, started)
        row.update(runtime_s=seconds, loop_s=seconds, keep_ratio_mean=sum(kept) / (tokens * len(kept)),
                   kept_per_step=kept, tokens_processed=sum(kept), query_ratio_mean=1.0,
                   policy_applied=policy_params_json(config.policy_params))
        return UnitEdit(config, row, emit=True, image=inputs["source"], kept_per_step=kept)

    def run_unit(self, unit: Mapping[str, Any], inputs: dict[str, Any]) -> list[UnitEdit]:
        """The frame's unit on a free logical GPU of this actor, reported to the ledger once it is done (one call
        per unit)."""
        with self.slot_lock:   # Ray Data runs at most `slots` units at once here: one is always free
            slot = self.free_slots.pop(0)
        self.unit.busy = self.unit.pairing = 0.0
        try:
            begun = self._now()
            edits = super().run_unit(unit, inputs)
            key = f"{unit['id']}|{','.join(unit['config_ids'])}"
            self.ledger.unit_done.remote(f"{self.actor}/gpu{slot}", key, begun, self._now(), self.unit.busy,
                                         self.unit.pairing)
        finally:
            with self.slot_lock:
                self.free_slots.append(slot)
        return edits
