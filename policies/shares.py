"""Schedules written as shares of the trajectory, so that a 4-step distilled model is not run with a
warm-up written for 28 or 50 steps."""
from __future__ import annotations


def share_steps(share: float, steps: int) -> int:
    """Steps that make up `share` of a `steps`-step trajectory: round(share·steps), at least 1 when the share
    is positive, at most `steps`."""
    if share <= 0:
        return 0
    return min(steps, max(1, round(share * steps)))
