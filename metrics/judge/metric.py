"""The VLM judge as a metric on the GPU actor: the judge_* columns of one edit, from a ``metrics.judge`` block.

No block, a judge that cannot be built or one that fails gives null scores and a ``judge_status`` saying why,
never a number; ``judge_raw`` keeps whatever the judge answered (JSON). The endpoint's API key stays in its
environment variable: only the variable's name is held here."""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import pyarrow as pa
from PIL import Image

from metrics.base import METRIC_OK, Column, Metric, MetricSettings, Scoring, status_reason

NO_JUDGE = "unavailable: no metrics.judge configured"
JUDGE_COLUMNS = (
    Column("judge_protocol", pa.string(), "the VLM judge's protocol: viescore | imgedit"),
    Column("judge_status", pa.string(), "ok, or why the judge_* numbers are null"),
    Column("judge_sc", pa.float64(), "VIEScore semantic consistency, 0-10 (min of its sub-scores)"),
    Column("judge_pq", pa.float64(), "VIEScore perceptual quality, 0-10"),
    Column("judge_overall", pa.float64(), "VIEScore O = sqrt(SC * PQ)", reported=True),
    Column("judge_imgedit_avg", pa.float64(), "ImgEdit: mean of the rubric's three 1-5 scores", reported=True),
    Column("judge_raw", pa.string(), "JSON {question: the judge's raw answer}"),
)


def judge_columns(status: str, protocol: str | None = None) -> dict[str, Any]:
    """Every judge_* column null but ``judge_status`` (and the protocol, when one was configured)."""
    return {**dict.fromkeys(c.name for c in JUDGE_COLUMNS), "judge_protocol": protocol, "judge_status": status}


class VlmJudge:
    """A VLM judge (metrics.judge) from a ``metrics.judge`` block, built once on first use; ``__call__`` returns
    the judge_* columns."""

    def __init__(self, spec: Mapping[str, Any] | None, device: str = "cpu",
                 localize: Callable[[str], str] | None = None) -> None:
        self.spec, self.device, self.localize = dict(spec) if spec else None, device, localize
        self.protocol = self.spec.get("protocol", "viescore") if self.spec else None
        self._judge: Any = None
        self._status: str | None = None

    @property
    def status(self) -> str:
        if self._status is None:
            self._status = self._load()
        return self._status

    def _load(self) -> str:
        if self.spec is None:
            return NO_JUDGE
        s = self.spec
        try:
            if s.get("backend", "endpoint") == "endpoint":
                from metrics.judge import EndpointJudge

                options = {k: s[k] for k in ("timeout_s", "max_attempts", "backoff_s", "max_tokens") if k in s}
                self._judge = EndpointJudge(s["base_url"], s["model"], api_key_env=s.get("api_key_env"), **options)
                return METRIC_OK
            local = self.localize(s["path"]) if self.localize else s["path"]
            from metrics.judge import LocalJudge   # torch + transformers: only where a local judge runs

            self._judge = LocalJudge(local, device=self.device, max_new_tokens=s.get("max_tokens", 512))
        except Exception as exc:  # noqa: BLE001 - a judge that cannot be built is a status, not a failed edit
            return f"unavailable: cannot build the judge: {type(exc).__name__}: {exc}"
        return METRIC_OK

    def __call__(self, source: Image.Image, edited: Image.Image, instruction: str,
                 category: str | None) -> dict[str, Any]:
        if self.status != METRIC_OK:
            return judge_columns(self.status, self.protocol)
        if self.protocol == "imgedit" and not category:
            return judge_columns("not computed: the record has no category (ImgEdit's rubric is per edit type)",
                                 self.protocol)
        from metrics.judge import judge_edit

        try:
            result = judge_edit(self._judge, source, edited, instruction, self.protocol, category=category)
        except Exception as exc:  # noqa: BLE001 - JudgeError is a status inside judge_edit; anything else here
            return judge_columns(self._scrubbed(f"failed: {type(exc).__name__}: {exc}"), self.protocol)
        return {"judge_protocol": self.protocol, "judge_status": result["status"], "judge_sc": result["sc"],
                "judge_pq": result["pq"], "judge_overall": result["overall"],
                "judge_imgedit_avg": result["imgedit_avg"],
                "judge_raw": json.dumps(result["judge_raw"], ensure_ascii=False) if result["judge_raw"] else None}

    def _scrubbed(self, text: str) -> str:
        """A message with the endpoint's API key blanked out, should an exception have carried it."""
        name = (self.spec or {}).get("api_key_env")
        key = os.environ.get(name) if name else None
        return text.replace(key, "***") if key else text


class JudgeMetric(Metric, name="judge"):
    """The judge on the edit as the editor made it: the protocol resizes (VIEScore compares at the source's
    size, GEdit-Bench's way); the ImgEdit rubric is the record's category."""

    title = "VLM judge"
    stage = "edit"
    status_column = "judge_status"
    columns = JUDGE_COLUMNS

    def __init__(self, settings: MetricSettings) -> None:
        super().__init__(settings)
        self.judge = VlmJudge(settings.options.get("judge"), settings.device, settings.localize)

    def score(self, scoring: Scoring) -> dict[str, Any]:
        return self.judge(scoring.source, scoring.made, scoring.instruction or "", scoring.category)

    @classmethod
    def skipped(cls, reason: str) -> dict[str, Any]:
        return judge_columns(reason)

    @classmethod
    def why_missing(cls, row: Mapping[str, Any], column: str) -> str:
        """Its ``judge_status``, or the other protocol's score when the judge was ok."""
        status, protocol = row.get("judge_status"), row.get("judge_protocol")
        if status == "ok" and isinstance(protocol, str):
            other = "viescore" if column == "judge_imgedit_avg" else "imgedit"
            if other == protocol:
                return f"the VLM judge ran the {protocol} protocol (metrics.judge.protocol), which has no `{column}`"
        return "VLM judge " + status_reason(status, column, "judge_status")
