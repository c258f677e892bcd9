"""Reading a judge's answer into scores, and the benchmarks' summaries of them.

A judge answers `{"score": [...], "reasoning": "..."}` (prompts.py). Real answers wrap it in ``` fences, add
text around it, quote numbers or use Python-style quotes; all of that is accepted. Anything else (no score list,
wrong count, a non-number, out of range) raises `JudgeError` with the reason: a failed judgement is recorded as
a failure, never as a number.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_MAX_SHOWN = 80  # characters of an answer quoted in a reason
_MAX_BRACES = 16  # opening/closing braces tried when looking for the JSON object


class JudgeError(Exception):
    """A judgement that produced no score. `kind`: unreachable, request, malformed or out_of_range."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


def _shown(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_SHOWN else flat[:_MAX_SHOWN] + "..."


def _candidates(text: str) -> Iterable[str]:
    """Fenced blocks first, then `{...}` spans from each opening to each closing brace, longest first (the
    answer may carry text around the object). Bounded: a long garbage answer must not cost quadratic time."""
    yield from _FENCE.findall(text)
    opens = [i for i, ch in enumerate(text) if ch == "{"][:_MAX_BRACES]
    closes = [i for i, ch in enumerate(text) if ch == "}"][::-1][:_MAX_BRACES]
    for start in opens:
        yield from (text[start:end + 1] for end in closes if end > start)


def _as_dict(candidate: str) -> dict | None:
    candidate = candidate.strip()
    try:
        value = json.loads(candidate)
    except ValueError:
        try:  # `{'score': [5, 6]}`: Python-style quotes, as some judges write
            value = ast.literal_eval(candidate)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def _score_field(text: str) -> object:
    for candidate in _candidates(text):
        found = _as_dict(candidate)
        if found is None:
            continue
        keys = {str(k).strip().lower(): k for k in found}
        if "score" in keys:
            return found[keys["score"]]
    raise JudgeError("malformed", f"no JSON object with a 'score' field in {_shown(text)!r}")


def _number(value: object) -> float:
    if isinstance(value, bool):  # bool is an int subclass; `true` is not a score
        raise JudgeError("malformed", f"score {value!r} is not a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise JudgeError("malformed", f"score {value!r} is not a number") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise JudgeError("malformed", f"score {value!r} is not a finite number")
    return float(value)


def parse_scores(text: str, count: int, low: float, high: float) -> list[float]:
    """The `count` scores of a judge's answer, each in [low, high]; JudgeError says why not."""
    field = _score_field(text)
    values = field if isinstance(field, (list, tuple)) else [field]
    if len(values) != count:
        raise JudgeError("malformed", f"expected {count} scores, got {len(values)}: {_shown(str(field))!r}")
    scores = [_number(v) for v in values]
    outside = [s for s in scores if not low <= s <= high]
    if outside:
        raise JudgeError("out_of_range", f"scores {outside} outside [{low:g}, {high:g}]")
    return scores


def viescore(sc_scores: Sequence[float], pq_scores: Sequence[float]) -> tuple[float, float, float]:
    """VIEScore / GEdit-Bench summary: SC = min of its sub-scores, PQ = min of its, O = sqrt(SC * PQ).

    The min makes one failed aspect sink the score (an edit that ignores the instruction is not rescued by
    being minimal); the geometric mean makes O zero when either SC or PQ is."""
    if not sc_scores or not pq_scores:
        raise ValueError("VIEScore needs at least one SC and one PQ sub-score")
    sc, pq = min(sc_scores), min(pq_scores)
    return float(sc), float(pq), math.sqrt(sc * pq)


def imgedit_average(scores: Sequence[float]) -> float:
    """ImgEdit's per-image score: the mean of its three 1-5 scores."""
    if len(scores) != 3:
        raise ValueError(f"ImgEdit has 3 scores per image, got {len(scores)}")
    return sum(scores) / 3.0


def imgedit_category_means(per_image: Iterable[tuple[str, float]]) -> dict[str, float]:
    """ImgEdit's table: per-image averages averaged per category (`(category, average)` pairs in)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for category, average in per_image:
        groups[category].append(average)
    return {category: sum(v) / len(v) for category, v in sorted(groups.items())}
