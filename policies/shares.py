"""Schedules written as shares of the trajectory, so that a 4-step distilled model is not run with a
warm-up written for 28 or 50 steps."""
from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import AfterValidator, BeforeValidator


def share_steps(share: float, steps: int) -> int:
    """Steps that make up `share` of a `steps`-step trajectory: round(share·steps), at least 1 when the share
    is positive, at most `steps`."""
    if share <= 0:
        return 0
    return min(steps, max(1, round(share * steps)))


def _steps_or_share(value: Any) -> int | str:
    """A step count (an integer >= 0) or a share of the trajectory written "P%" (0 <= P <= 100)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a step count or a share such as '25%', got {value!r}")
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1])
        except ValueError:
            raise ValueError(f"expected a share such as '25%', got {value!r}") from None
        if not 0.0 <= share <= 100.0:
            raise ValueError(f"a share of the steps must be within 0% and 100%, got {value!r}")
        return f"{share:g}%"
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a step count or a share such as '25%', got {value!r}") from None
    if count != value and not (isinstance(value, str) and value.strip().isdigit()) or count < 0:
        raise ValueError(f"expected a step count >= 0 or a share such as '25%', got {value!r}")
    return count


# a schedule parameter in steps (an integer) or as a share of the trajectory ("25%": a quarter of the steps, at
# least one when positive): the share form keeps a warm-up meaningful on a 4-step distilled model
StepsOrShare = Annotated[Union[int, str], BeforeValidator(_steps_or_share)]


def steps_of(value: int | str, steps: int, minimum: int = 0) -> int:
    """The step count `value` means in a `steps`-step edit (a share resolved with `share_steps`)."""
    count = share_steps(float(value[:-1]) / 100.0, steps) if isinstance(value, str) else int(value)
    return max(minimum, count)


def _at_least_one(value: int | str) -> int | str:
    if isinstance(value, int) and value < 1:
        raise ValueError(f"expected at least 1 step (or a share such as '10%'), got {value!r}")
    return value


# the same, where the policy needs one full step at least (a share resolves to one at least)
PositiveStepsOrShare = Annotated[StepsOrShare, AfterValidator(_at_least_one)]
