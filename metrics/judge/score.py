"""One edit judged under a benchmark's protocol: the questions asked, the scores read, the summary computed.

The result is a flat dict, ready to become row columns. `status` is "ok" or the reason there is no score; a
failed judgement leaves the summary `None` (sub-scores that were read are kept, they are real answers).
"""

from __future__ import annotations

from typing import Literal

import PIL.Image

from metrics.judge.base import Judge
from metrics.judge.parse import JudgeError, imgedit_average, parse_scores, viescore
from metrics.judge.prompts import (
    IMGEDIT_RANGE,
    VIESCORE_RANGE,
    imgedit_category,
    imgedit_prompt,
    viescore_pq_prompt,
    viescore_sc_prompt,
)

JudgeProtocol = Literal["viescore", "imgedit"]


def _empty(protocol: str, category: str | None) -> dict:
    return {"protocol": protocol, "category": category, "status": "ok", "sc_scores": None, "pq_scores": None,
            "sc": None, "pq": None, "overall": None, "imgedit_scores": None, "imgedit_avg": None, "judge_raw": {}}


def _ask(judge: Judge, result: dict, name: str, images: list[PIL.Image.Image], prompt: str,
         count: int, bounds: tuple[float, float]) -> list[float] | None:
    """Asks one question, keeps the raw answer under `name`, returns the scores or records why there are none."""
    try:
        raw = judge.ask(images, prompt)
        result["judge_raw"][name] = raw
        return parse_scores(raw, count, *bounds)
    except JudgeError as error:
        failure = f"{name}: {error}"  # every failed question is named, not only the last
        result["status"] = failure if result["status"] == "ok" else f"{result['status']}; {failure}"
        return None


def _judge_viescore(judge: Judge, result: dict, source: PIL.Image.Image, edited: PIL.Image.Image,
                    instruction: str) -> None:
    result["sc_scores"] = _ask(judge, result, "sc", [source, edited], viescore_sc_prompt(instruction), 2,
                               VIESCORE_RANGE)
    if "sc" not in result["judge_raw"]:
        return  # no answer at all (unreachable, refused): a second question would fail the same way, slowly
    result["pq_scores"] = _ask(judge, result, "pq", [edited], viescore_pq_prompt(), 2, VIESCORE_RANGE)
    if result["sc_scores"] is not None and result["pq_scores"] is not None:
        result["sc"], result["pq"], result["overall"] = viescore(result["sc_scores"], result["pq_scores"])


def judge_edit(judge: Judge, source: PIL.Image.Image, edited: PIL.Image.Image, instruction: str,
               protocol: JudgeProtocol = "viescore", category: str | None = None) -> dict:
    """Judge one edit. viescore: two questions (SC on [source, edited], PQ on [edited], the edited image at the
    source's size) -> sc, pq, overall on 0-10. imgedit: one rubric question for `category` on [source, edited]
    -> three 1-5 scores and their mean.

    Keys: protocol, category, status, sc_scores, pq_scores, sc, pq, overall, imgedit_scores, imgedit_avg,
    judge_raw ({question name: raw answer})."""
    if protocol == "viescore":
        result = _empty(protocol, category)
        if edited.size != source.size:  # as GEdit's scorer: the judge compares the two at one size
            edited = edited.convert("RGB").resize(source.size, PIL.Image.Resampling.LANCZOS)
        _judge_viescore(judge, result, source, edited, instruction)
    elif protocol == "imgedit":
        if category is None:
            raise ValueError("the imgedit protocol needs the edit's category (its rubric)")
        result = _empty(protocol, imgedit_category(category))
        scores = _ask(judge, result, "imgedit", [source, edited], imgedit_prompt(instruction, category), 3,
                      IMGEDIT_RANGE)
        if scores is not None:
            result["imgedit_scores"], result["imgedit_avg"] = scores, imgedit_average(scores)
    else:
        raise ValueError(f"unknown judge protocol {protocol!r}; known: viescore, imgedit")
    return result
