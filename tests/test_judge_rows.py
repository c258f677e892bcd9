"""The VLM judge in the ablation rows: metrics.judge config, the edit stage's judge_* columns, report notes."""
from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pandas as pd
import PIL.Image
import pytest

from pipeline import storage as st
from pipeline.config import ConfigError, parse_config
from pipeline.edit_stage import EditActor
from metrics.judge.metric import JUDGE_COLUMNS, NO_JUDGE, VlmJudge
from pipeline.records import STATUS_OK, base_row, error_row, new_record, output_schema, rows_to_table, validate_record
from report.notes import missing_metric_lines

KEY_ENV, KEY = "DROPEDIT_TEST_ROWS_JUDGE_KEY", "sk-rows-secret-42"
SC_ANSWER = '{"score": [8, 6], "reasoning": "follows the instruction"}'
PQ_ANSWER = '```json\n{"score": [9, 4], "reasoning": "some artifacts"}\n```'


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append({"auth": self.headers.get("Authorization"), "body": body})
        answer = self.server.answers[min(len(self.server.seen), len(self.server.answers)) - 1]
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.seen, httpd.answers = [], [SC_ANSWER, PQ_ANSWER]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


BASE = {"input": "x.jsonl", "output": "/tmp/out", "models": [{"name": "tiny-flux-kontext"}], "policies": ["full"]}


def _judge_block(server: ThreadingHTTPServer, **extra: object) -> dict:
    """metrics.judge as the config gives it to the actors (validated, then model_dump)."""
    host, port = server.server_address[:2]
    block = {"base_url": f"http://{host}:{port}/v1", "model": "judge-model", "api_key_env": KEY_ENV,
             "backoff_s": 0, "timeout_s": 5} | extra
    return parse_config({**BASE, "metrics": {"judge": block}}).metrics.model_dump()


def _actor(metrics: dict, tmp_path) -> EditActor:
    actor = object.__new__(EditActor)   # the metrics part only: no editing pipeline loaded
    actor.device, actor.storage = "cpu", st.StorageConfig.from_mapping(None)
    actor._metric_models(metrics, str(tmp_path / "cache"))
    return actor


def _inputs(category: str | None = None):
    source = PIL.Image.new("RGB", (48, 32), (200, 30, 30))
    result = SimpleNamespace(image=PIL.Image.new("RGB", (32, 32), (30, 30, 200)))   # edits run at another size
    record = validate_record(new_record(id="r1", image="x.png", instruction="make it blue", category=category))
    return source, result, record


def _row(out: dict, record) -> dict:
    row = base_row(record, {"config_id": "c", "policy": "full", "policy_params": {}}, "run")
    row.update(out, status=STATUS_OK)
    return row


# ------------------------------------------------------------------ config


def test_config_judge_block_default_and_errors() -> None:
    cfg = parse_config(BASE)
    assert cfg.metrics.judge is None and "judge" in cfg.metrics.compute
    local = parse_config({**BASE, "metrics": {"judge": {"backend": "local", "path": "s3://b/qwen-vl",
                                                        "protocol": "imgedit"}}}).metrics.judge
    assert (local.backend, local.protocol, local.max_tokens, local.max_attempts) == ("local", "imgedit", 512, 4)
    bad = [({"backend": "local"}, "metrics.judge.path: is required for backend 'local'"),
           ({"base_url": "http://h/v1"}, "metrics.judge.model: is required for backend 'endpoint'"),
           ({"protocol": "gpt", "base_url": "u", "model": "m"}, "metrics.judge.protocol: got 'gpt'; accepted values:"),
           ({"base_url": "u", "model": "m", "api_key": KEY}, "metrics.judge.api_key: the key must not be in the"),
           ({"base_url": "u", "model": "m", "api_key_env": KEY}, "metrics.judge.api_key_env: must be the name of")]
    for block, message in bad:
        with pytest.raises(ConfigError) as info:
            parse_config({**BASE, "metrics": {"judge": block}})
        assert str(info.value).startswith(message) and KEY not in str(info.value)


# ------------------------------------------------------------------ the edit stage's judge columns


def test_edit_stage_judge_columns_from_an_endpoint(server, tmp_path, monkeypatch, score_edit) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    actor = _actor({**_judge_block(server), "compute": ["judge"]}, tmp_path)
    source, result, record = _inputs()
    out = score_edit(actor, result, source, None, {"policy": "full"}, record)
    # by hand: SC = min(8, 6) = 6, PQ = min(9, 4) = 4, O = sqrt(6 * 4)
    assert out["judge_status"] == "ok" and out["judge_protocol"] == "viescore"
    assert (out["judge_sc"], out["judge_pq"]) == (6.0, 4.0) and out["judge_overall"] == pytest.approx(math.sqrt(24))
    assert out["judge_imgedit_avg"] is None
    assert json.loads(out["judge_raw"]) == {"sc": SC_ANSWER, "pq": PQ_ANSWER}
    assert [s["auth"] for s in server.seen] == [f"Bearer {KEY}"] * 2
    assert server.seen[0]["body"]["model"] == "judge-model" and "make it blue" in json.dumps(server.seen[0]["body"])
    table = rows_to_table([_row(out, record)])   # the columns fit the row schema
    assert table.schema == output_schema() and table.column("judge_overall")[0].as_py() == pytest.approx(math.sqrt(24))
    assert KEY not in json.dumps(table.to_pylist(), default=str)   # the key is never stored


def test_edit_stage_imgedit_rubric_uses_the_record_category(server, tmp_path, monkeypatch, score_edit) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    server.answers = ['{"score": [5, 4, 3], "reasoning": "r"}']
    actor = _actor({**_judge_block(server, protocol="imgedit"), "compute": ["judge"]}, tmp_path)
    source, result, record = _inputs("add")
    out = score_edit(actor, result, source, None, {"policy": "full"}, record)
    assert out["judge_status"] == "ok" and out["judge_protocol"] == "imgedit"
    assert out["judge_imgedit_avg"] == pytest.approx(4.0) and out["judge_overall"] is None
    assert "addition" in server.seen[0]["body"]["messages"][0]["content"][-1]["text"]
    source, result, record = _inputs(None)
    out = score_edit(actor, result, source, None, {"policy": "full"}, record)
    assert out["judge_status"].startswith("not computed: the record has no category")
    assert out["judge_imgedit_avg"] is None and len(server.seen) == 1


def test_no_judge_configured_gives_null_columns_and_a_status(tmp_path, score_edit) -> None:
    source, result, record = _inputs()
    out = score_edit(_actor(parse_config(BASE).metrics.model_dump(), tmp_path), result, source, None,
                     {"policy": "full"}, record)
    assert out["judge_status"] == NO_JUDGE == "unavailable: no metrics.judge configured"
    assert all(out[c] is None for c in (c.name for c in JUDGE_COLUMNS) if c != "judge_status")
    out = score_edit(_actor({"compute": ["background"]}, tmp_path), result, source, None, {"policy": "full"}, record)
    assert out["judge_status"] == "not computed: judge not in metrics.compute" and out["judge_sc"] is None
    failed = error_row(new_record(id="x", instruction="i"), {"config_id": "c"}, RuntimeError("boom"), run_id="r")
    assert failed["judge_status"] == "not computed: edit failed" and failed["judge_overall"] is None


def test_judge_failures_are_statuses_not_crashes(server, tmp_path, monkeypatch, score_edit) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    server.answers = [SC_ANSWER, "The picture is lovely."]   # PQ unparsable: SC kept in the raw, no O
    actor = _actor({**_judge_block(server), "compute": ["judge"]}, tmp_path)
    source, result, record = _inputs()
    out = score_edit(actor, result, source, None, {"policy": "full"}, record)
    assert out["judge_status"].startswith("pq: malformed") and out["judge_overall"] is None
    assert json.loads(out["judge_raw"])["pq"] == "The picture is lovely."

    class Broken:
        def ask(self, images, prompt):
            raise RuntimeError(f"CUDA out of memory (key {KEY})")

    judge = next(m for m in actor.metrics.active if m.name == "judge").judge
    judge._judge = Broken()   # an unexpected exception: a status, the row stays ok
    out = score_edit(actor, result, source, None, {"policy": "full"}, record)
    assert out["judge_status"] == "failed: RuntimeError: CUDA out of memory (key ***)"
    assert out["judge_sc"] is out["judge_overall"] is out["judge_raw"] is None
    local = VlmJudge({"backend": "local", "path": str(tmp_path / "no-such-folder")}, "cpu")
    assert local.status.startswith("unavailable: cannot build the judge")
    assert local(source, result.image, "x", None)["judge_status"] == local.status


# ------------------------------------------------------------------ report


def test_report_explains_missing_judge_scores() -> None:
    rows = pd.DataFrame([
        {"config_label": "full", "policy": "full", "status": "ok", "judge_protocol": None, "judge_status": NO_JUDGE,
         "judge_overall": None, "judge_imgedit_avg": None},
        {"config_label": "topi", "policy": "topi", "status": "ok", "judge_protocol": "viescore", "judge_status": "ok",
         "judge_overall": 5.0, "judge_imgedit_avg": None},
    ])
    lines = missing_metric_lines(rows, ["judge_overall", "judge_imgedit_avg"])
    assert any("`judge_overall`" in line and "full (1 of 1 edits)" in line and NO_JUDGE in line for line in lines)
    assert any("topi" in line and "ran the viescore protocol" in line for line in lines)
