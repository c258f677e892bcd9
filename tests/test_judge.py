"""The VLM judge (metrics.judge): parsing, the benchmarks' arithmetic, the endpoint client against a real local
HTTP server, and LocalJudge on a tiny Qwen2.5-VL built from a config."""

from __future__ import annotations

import base64
import io
import json
import math
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import PIL.Image
import pytest

from metrics.judge import (
    EndpointJudge,
    JudgeError,
    imgedit_average,
    imgedit_category_means,
    imgedit_prompt,
    judge_edit,
    parse_scores,
    resize_to_area,
    viescore,
)
from metrics.judge.prompts import IMGEDIT_CATEGORIES, imgedit_criteria


def _image(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> PIL.Image.Image:
    return PIL.Image.new("RGB", size, color)


# ---- parsing ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ('{"score": [7, 9], "reasoning": "fine"}', [7.0, 9.0]),
    ('```json\n{"score": [7, 9.5], "reasoning": "fine"}\n```', [7.0, 9.5]),
    ('Here you go:\n{"score": ["7", " 3 "], "reasoning": "a {brace} inside"}\nHope this helps.', [7.0, 3.0]),
    ("{'score': [0, 10], 'reasoning': 'python quotes'}", [0.0, 10.0]),
    ('{"Score": [1, 2]}', [1.0, 2.0]),
])
def test_parse_good_answers(text: str, expected: list[float]) -> None:
    assert parse_scores(text, 2, 0, 10) == expected


@pytest.mark.parametrize("text, kind, needle", [
    ("I think it is a good edit, 8/10.", "malformed", "no JSON object"),
    ('{"reasoning": "no score here"}', "malformed", "no JSON object"),
    ('{"score": [7], "reasoning": ""}', "malformed", "expected 2 scores, got 1"),
    ('{"score": ["seven", 8]}', "malformed", "not a number"),
    ('{"score": [true, 8]}', "malformed", "not a number"),
    ('{"score": [NaN, 8]}', "malformed", "finite"),
    ('{"score": [11, 8]}', "out_of_range", "outside [0, 10]"),
    ('{"score": [-1, 8]}', "out_of_range", "outside"),
    ("", "malformed", "no JSON object"),
])
def test_parse_bad_answers_name_the_reason(text: str, kind: str, needle: str) -> None:
    with pytest.raises(JudgeError) as caught:
        parse_scores(text, 2, 0, 10)
    assert caught.value.kind == kind and needle in str(caught.value)


def test_viescore_and_imgedit_arithmetic() -> None:
    sc, pq, overall = viescore([8, 6], [9, 4])
    assert (sc, pq) == (6.0, 4.0) and overall == pytest.approx(math.sqrt(24))
    assert viescore([0, 10], [10, 10])[2] == 0.0  # a failed edit is not rescued by quality
    assert imgedit_average([5, 4, 3]) == pytest.approx(4.0)
    means = imgedit_category_means([("add", 4.0), ("add", 2.0), ("remove", 3.0)])
    assert means == {"add": pytest.approx(3.0), "remove": pytest.approx(3.0)}
    with pytest.raises(ValueError):
        imgedit_average([5, 4])


def test_imgedit_prompts_cover_the_nine_types() -> None:
    assert set(IMGEDIT_CATEGORIES) == {"add", "remove", "replace", "adjust", "style", "extract", "background",
                                       "compose", "action"}
    assert imgedit_criteria("alter") == imgedit_criteria("adjust")
    assert "identity preservation" in imgedit_prompt("make him wave", "action")
    with pytest.raises(KeyError, match="unknown ImgEdit category"):
        imgedit_prompt("x", "teleport")


def test_resize_to_area_keeps_aspect() -> None:
    out = resize_to_area(_image((1, 2, 3), (1024, 512)))
    assert out.size == (724, 362)  # GEdit: sqrt(512² * 2) truncated, and the height from the same ratio


# ---- the endpoint client against a local HTTP server ------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if server.failures_left > 0:
            server.failures_left -= 1
            message = json.dumps({"error": f"try later, {self.headers.get('Authorization')}"}).encode()
            self.send_response(server.fail_code)
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)
            return
        answer = server.answers[min(len(server.seen) - 1, len(server.answers) - 1)]
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.seen, httpd.failures_left, httpd.fail_code = [], 0, 503
    httpd.answers = ['{"score": [8, 6], "reasoning": "ok"}', '```json\n{"score": [9, 4]}\n```']
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _judge(server: ThreadingHTTPServer, **kwargs: object) -> EndpointJudge:
    host, port = server.server_address[:2]
    options = {"api_key_env": "DROPEDIT_TEST_JUDGE_KEY", "backoff_s": 0.0, "timeout_s": 5.0} | kwargs
    return EndpointJudge(f"http://{host}:{port}/v1", "judge-model", **options)


def test_endpoint_request_and_viescore(server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPEDIT_TEST_JUDGE_KEY", "sk-test-123")
    judge = _judge(server)
    result = judge_edit(judge, _image((255, 0, 0)), _image((0, 0, 255), (32, 32)), "make it blue")
    assert result["status"] == "ok"
    assert (result["sc"], result["pq"]) == (6.0, 4.0) and result["overall"] == pytest.approx(math.sqrt(24))
    assert result["judge_raw"]["sc"].startswith('{"score": [8, 6]')
    sc_request, pq_request = server.seen
    assert sc_request["path"] == "/v1/chat/completions" and sc_request["auth"] == "Bearer sk-test-123"
    body = sc_request["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0
    parts = body["messages"][0]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(urls) == 2 and len([p for p in pq_request["body"]["messages"][0]["content"]
                                   if p["type"] == "image_url"]) == 1
    assert all(u.startswith("data:image/png;base64,") for u in urls)
    first = PIL.Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1])))
    assert first.getpixel((0, 0)) == (255, 0, 0) and first.width * first.height > 200_000  # resized to ~512²
    second = PIL.Image.open(io.BytesIO(base64.b64decode(urls[1].split(",", 1)[1])))
    assert second.size == first.size  # the edited image at the source's size, as GEdit compares them
    assert "make it blue" in parts[-1]["text"]
    assert "sk-test-123" not in repr(judge) and "sk-test-123" not in json.dumps(result)


def test_endpoint_retries_503_then_succeeds(server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPEDIT_TEST_JUDGE_KEY", "k")
    server.failures_left = 2
    server.answers = ['{"score": [5, 4, 3], "reasoning": "r"}']
    result = judge_edit(_judge(server, max_attempts=3), _image((0, 0, 0)), _image((9, 9, 9)), "add a hat",
                        "imgedit", category="add")
    assert result["status"] == "ok" and len(server.seen) == 3
    assert result["imgedit_scores"] == [5.0, 4.0, 3.0] and result["imgedit_avg"] == pytest.approx(4.0)


def test_endpoint_always_failing_gives_a_status_not_a_number(server: ThreadingHTTPServer,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPEDIT_TEST_JUDGE_KEY", "k")
    server.failures_left = 10**6
    result = judge_edit(_judge(server, max_attempts=3), _image((0, 0, 0)), _image((9, 9, 9)), "x")
    assert result["status"].startswith("sc: unreachable") and "after 3 attempts" in result["status"]
    assert "HTTP 503" in result["status"] and len(server.seen) == 3  # PQ not asked once the endpoint is gone
    assert result["sc"] is result["pq"] is result["overall"] is result["sc_scores"] is None


def test_endpoint_does_not_retry_a_refused_request(server: ThreadingHTTPServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPEDIT_TEST_JUDGE_KEY", "wrong")
    server.failures_left, server.fail_code = 10, 401
    result = judge_edit(_judge(server), _image((0, 0, 0)), _image((9, 9, 9)), "x")
    assert result["status"].startswith("sc: request: HTTP 401") and len(server.seen) == 1
    assert result["overall"] is None and "wrong" not in result["status"]


def test_endpoint_connection_refused_and_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    judge = EndpointJudge(f"http://127.0.0.1:{port}/v1", "m", max_attempts=2, backoff_s=0.0, timeout_s=2.0)
    with pytest.raises(JudgeError, match="after 2 attempts; last: connection error"):
        judge.ask([_image((0, 0, 0))], "hi")
    monkeypatch.delenv("DROPEDIT_NO_SUCH_KEY", raising=False)
    keyed = EndpointJudge(f"http://127.0.0.1:{port}/v1", "m", api_key_env="DROPEDIT_NO_SUCH_KEY")
    result = judge_edit(keyed, _image((0, 0, 0)), _image((1, 1, 1)), "x")
    assert result["status"].startswith("sc: request: environment variable DROPEDIT_NO_SUCH_KEY")
    assert "; pq" not in result["status"] and result["overall"] is None


def test_malformed_answer_keeps_raw_and_gives_status(server: ThreadingHTTPServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROPEDIT_TEST_JUDGE_KEY", "k")
    server.answers = ['{"score": [8, 6]}', "The image looks great!"]
    result = judge_edit(_judge(server), _image((0, 0, 0)), _image((1, 1, 1)), "x")
    assert result["status"].startswith("pq: malformed") and result["sc_scores"] == [8.0, 6.0]
    assert result["overall"] is None and result["judge_raw"]["pq"] == "The image looks great!"


# ---- LocalJudge on a tiny Qwen2.5-VL -----------------------------------------------------------------------

def test_local_judge_tiny_qwen_vl(tmp_path) -> None:
    from metrics.judge import LocalJudge
    from actors.tiny_models import build_tiny_qwen_vl

    model, processor = build_tiny_qwen_vl(seed=0)
    model.save_pretrained(tmp_path)  # LocalJudge loads a folder, as it would a downloaded checkpoint
    processor.save_pretrained(tmp_path)
    judge = LocalJudge(tmp_path, device="cpu", max_new_tokens=8)
    raw = judge.ask([_image((200, 10, 10)), _image((10, 10, 200))], "Rate the edit.")
    assert isinstance(raw, str)
    result = judge_edit(judge, _image((200, 10, 10)), _image((10, 10, 200)), "make it blue")
    # Random weights answer garbage: the row must carry the reason, never a number made from it.
    assert result["status"].startswith("sc: ") and "; pq: " in result["status"] and result["overall"] is None
    assert result["sc"] is result["pq"] is None and isinstance(result["judge_raw"]["sc"], str)
