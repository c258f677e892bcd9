"""What every step uses, as a function of (seed, step, micro-step, rank) only, so that a resumed run repeats
exactly what the uninterrupted one does: the learning rate, the records of a micro-batch, the generator of its
draws (σ, ε, kept reference tokens)."""
from __future__ import annotations

import math

import numpy as np
import torch


def learning_rate(peak: float, steps: int, warmup: int, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _seed(*numbers: int) -> int:
    return int(np.random.SeedSequence([int(n) for n in numbers]).generate_state(1)[0])


def batch_indices(seed: int, rank: int, local_records: int, batch: int, accum: int, step: int,
                  micro: int) -> list[int]:
    """This worker's records of one micro-step: its records in a fresh permutation per epoch (an epoch = one
    pass over this worker's records), read in order."""
    first = (step * accum + micro) * batch
    out = []
    for position in range(first, first + batch):
        epoch, offset = divmod(position, local_records)
        perm = torch.randperm(local_records, generator=torch.Generator().manual_seed(_seed(seed, 1, epoch, rank)))
        out.append(int(perm[offset]))
    return out


def generator(seed: int, rank: int, step: int, micro: int) -> torch.Generator:
    """The generator of one micro-step's draws."""
    return torch.Generator().manual_seed(_seed(seed, 2, step, micro, rank))


def steps_per_epoch(records: int, workers: int, batch: int, accum: int) -> float:
    return records / (workers * batch * accum)
