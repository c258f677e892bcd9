"""VLM judges that score an edit the way GEdit-Bench (VIEScore) and ImgEdit do.

    judge = EndpointJudge("http://localhost:8000/v1", "Qwen/Qwen2.5-VL-72B-Instruct", api_key_env="JUDGE_API_KEY")
    judge = LocalJudge("/models/Qwen2.5-VL-7B-Instruct")
    judge_edit(judge, source, edited, "make the sky red")                       # sc, pq, overall (0-10)
    judge_edit(judge, source, edited, "add a hat", "imgedit", category="add")   # 3 scores (1-5), their mean

`prompts` holds the questions, `parse` reads answers (JudgeError when there is no score) and summarises,
`endpoint`/`local` are the backends behind `base.Judge.ask(images, prompt) -> str`, `score.judge_edit` runs one
edit's protocol. `LocalJudge` (torch, transformers) is imported on first use.
"""

from __future__ import annotations

from metrics.judge.base import JUDGE_AREA, Judge, png_data_url, resize_to_area
from metrics.judge.endpoint import EndpointJudge
from metrics.judge.parse import JudgeError, imgedit_average, imgedit_category_means, parse_scores, viescore
from metrics.judge.prompts import IMGEDIT_CATEGORIES, imgedit_prompt, viescore_pq_prompt, viescore_sc_prompt
from metrics.judge.score import judge_edit


def __getattr__(name: str) -> object:
    if name == "LocalJudge":  # keeps torch/transformers out of an endpoint-only import
        from metrics.judge.local import LocalJudge
        return LocalJudge
    raise AttributeError(name)


__all__ = [
    "IMGEDIT_CATEGORIES", "JUDGE_AREA", "EndpointJudge", "Judge", "JudgeError", "LocalJudge", "imgedit_average",
    "imgedit_category_means", "imgedit_prompt", "judge_edit", "parse_scores", "png_data_url", "resize_to_area",
    "viescore", "viescore_pq_prompt", "viescore_sc_prompt",
]
