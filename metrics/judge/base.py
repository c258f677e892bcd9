"""The one interface every judge backend implements, and the image handling they share."""

from __future__ import annotations

import base64
import io
import math
from typing import Protocol, runtime_checkable

import PIL.Image

# GEdit-Bench's scoring script resizes the source to about 512x512 pixels of area (aspect kept, sides truncated
# to integers) and the edited image to the source's size before the judge sees them: the scores then do not
# depend on the editor's output size, and a request stays small.
JUDGE_AREA = 512 * 512


@runtime_checkable
class Judge(Protocol):
    """A vision-language judge: images and a prompt in, the raw answer text out.

    Backends raise `metrics.judge.parse.JudgeError` when they get no answer (unreachable, refused); parsing the
    answer is the caller's business, so the raw text can be kept whatever it says."""

    def ask(self, images: list[PIL.Image.Image], prompt: str) -> str: ...


def resize_to_area(image: PIL.Image.Image, area: int | None = JUDGE_AREA) -> PIL.Image.Image:
    """RGB copy with about `area` pixels and the same aspect ratio; `None` keeps the size."""
    image = image.convert("RGB")
    if area is None:
        return image
    ratio = image.width / image.height
    width = max(1, int(math.sqrt(area * ratio)))
    height = max(1, int(math.sqrt(area * ratio) / ratio))
    if (width, height) == image.size:
        return image
    return image.resize((width, height), PIL.Image.Resampling.LANCZOS)


def png_data_url(image: PIL.Image.Image) -> str:
    """`data:image/png;base64,...`: how OpenAI-compatible chat APIs take an inline image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
