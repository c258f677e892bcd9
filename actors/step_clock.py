"""Per-step times without draining the GPU's queue every step.

Timing a step with `time.perf_counter` is right only after `torch.cuda.synchronize`: twice a step, that drains
the stream, so the host cannot queue step i+1 while the GPU runs step i (tens of microseconds of launch latency
per kernel become visible, ~3-4 k kernels a call). On CUDA the clock records CUDA events instead, and reads
their times once, after the edit's last step (the decode synchronises anyway). It synchronises per step only
when someone watches the steps live (`Editor.edit(on_step=...)`: the trace must be final when handed over),
and on the CPU, where the host is the device and `perf_counter` is exact.

One clock per edit; its stamps hold that edit's events only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch


@dataclass
class Stamp:
    host: float                  # perf_counter at the stamp
    event: Any = None            # a recorded CUDA event (its time read later), or None: `host` is exact


@dataclass
class StepClock:
    device: torch.device
    live: bool = False                                   # a per-step callback reads each step as it ends
    make_event: Callable[[], Any] | None = None          # torch.cuda.Event(enable_timing=True) on CUDA
    _pending: list[tuple[list, int, Stamp, Stamp, Stamp, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.make_event is None and self.device.type == "cuda" and not self.live:
            self.make_event = lambda: torch.cuda.Event(enable_timing=True)

    @property
    def deferred(self) -> bool:
        return self.make_event is not None

    def stamp(self) -> Stamp:
        """Now, as the device sees it: an event on its stream, or the host clock after a synchronisation."""
        if self.deferred:
            event = self.make_event()
            event.record()
            return Stamp(time.perf_counter(), event)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return Stamp(time.perf_counter())

    @staticmethod
    def seconds(a: Stamp, b: Stamp) -> float:
        """Seconds from `a` to `b`: exact for host stamps; for events, only after `settle`'s synchronisation."""
        if a.event is not None and b.event is not None:
            return a.event.elapsed_time(b.event) / 1000.0
        return b.host - a.host

    def record(self, traces: list, trace: Any, start: Stamp, observing: Stamp, end: Stamp,
               plan_seconds: float) -> None:
        """Append `trace` (a frozen `StepTrace`) to `traces` with its `seconds` (start -> end) and
        `policy_seconds` (the plan's host time + observing -> end): now for host stamps, at `settle` for events."""
        if not self.deferred:
            traces.append(self._timed(trace, start, observing, end, plan_seconds))
            return
        self._pending.append((traces, len(traces), start, observing, end, plan_seconds))
        traces.append(trace)

    def _timed(self, trace: Any, start: Stamp, observing: Stamp, end: Stamp, plan_seconds: float) -> Any:
        return replace(trace, seconds=self.seconds(start, end),
                       policy_seconds=plan_seconds + self.seconds(observing, end))

    def settle(self) -> None:
        """Once the edit's work is done: wait for its last event and fill every deferred step's times."""
        if not self._pending:
            return
        self._pending[-1][4].event.synchronize()
        for traces, index, start, observing, end, plan_seconds in self._pending:
            traces[index] = self._timed(traces[index], start, observing, end, plan_seconds)
        self._pending.clear()
