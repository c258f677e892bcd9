"""A judge behind any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, hosted APIs).

Uses the standard library's urllib so the judge adds no dependency. The API key is read from an environment
variable at request time; only the variable's name is kept on the object, so rows, logs and reprs never hold it.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import PIL.Image

from metrics.judge.base import JUDGE_AREA, png_data_url, resize_to_area
from metrics.judge.parse import JudgeError

# Worth another attempt: rate limiting and server-side trouble. Other 4xx (bad key, bad request) will not heal.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_BACKOFF_CAP_S = 60.0


@dataclass(frozen=True)
class EndpointJudge:
    """POSTs `{base_url}/chat/completions` with the images as PNG data URLs and temperature 0.

    `max_attempts` bounds the tries per question; between them it waits `backoff_s * 2**k` seconds (capped at
    60 s), or the server's numeric `Retry-After` when that is longer."""

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout_s: float = 120.0
    max_attempts: int = 4
    backoff_s: float = 2.0
    max_tokens: int = 512
    area: int | None = JUDGE_AREA

    def ask(self, images: list[PIL.Image.Image], prompt: str) -> str:
        body = json.dumps(self._body(images, prompt)).encode("utf-8")
        last = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            try:
                return _answer_text(self._post(body))
            except _Retryable as error:
                last = str(error)
                if attempt < self.max_attempts:
                    time.sleep(max(min(self.backoff_s * 2 ** (attempt - 1), _BACKOFF_CAP_S), error.retry_after_s))
        raise JudgeError("unreachable", f"{self.base_url} failed after {self.max_attempts} attempts; last: {last}")

    def _body(self, images: list[PIL.Image.Image], prompt: str) -> dict:
        parts = [{"type": "image_url", "image_url": {"url": png_data_url(resize_to_area(image, self.area))}}
                 for image in images]
        parts.append({"type": "text", "text": prompt})
        return {"model": self.model, "messages": [{"role": "user", "content": parts}], "temperature": 0,
                "max_tokens": self.max_tokens}

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise JudgeError("request", f"environment variable {self.api_key_env} (the API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _scrubbed(self, text: str) -> str:
        """A server's error text with our key blanked out (some echo what they were sent)."""
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return text.replace(key, "***") if key else text

    def _post(self, body: bytes) -> dict:
        url = self.base_url.rstrip("/") + "/chat/completions"
        request = urllib.request.Request(url, data=body, headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            detail = self._scrubbed(error.read(200).decode("utf-8", "replace"))
            if error.code in RETRY_STATUSES:
                raise _Retryable(f"HTTP {error.code}", _retry_after_s(error.headers.get("Retry-After"))) from None
            raise JudgeError("request", f"HTTP {error.code} from {url}: {' '.join(detail.split())}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            raise _Retryable(f"connection error: {reason}") from None
        except ValueError as error:  # a 200 whose body is not JSON: a proxy page, a broken server
            raise JudgeError("request", f"{url} answered with a body that is not JSON ({error})") from None


class _Retryable(Exception):
    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _retry_after_s(header: str | None) -> float:
    try:
        return min(float(header), _BACKOFF_CAP_S) if header else 0.0
    except ValueError:  # an HTTP date: fall back to our own backoff
        return 0.0


def _answer_text(payload: dict) -> str:
    """`choices[0].message.content`, a string or (some servers) a list of text parts."""
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise JudgeError("request", f"response has no choices[0].message.content: {str(payload)[:200]}") from None
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise JudgeError("request", f"message content is {type(content).__name__}, not text")
    return content
