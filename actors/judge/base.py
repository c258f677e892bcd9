"""The one interface every judge backend implements, and the image handling they share."""

from __future__ import annotations

import base64
import io
import math
from typing import Protocol, runtime_checkable

import PIL.Image

# GEdit-Bench resizes every image to about 512x512 pixels of area (aspect kept) before the judge sees it: the
# scores then do not depend on the editor's output size, and a request stays small.
JUDGE_AREA = 512 * 512
_MULTIPLE = 32  # sides rounded to a multiple of 32, as GEdit's resize does


@runtime_checkable
class Judge(Protocol):
    """A vision-language judge: images and a prompt in, the raw answer text out.

    Backends raise `actors.judge.parse.JudgeError` when they get no answer (unreachable, refused); parsing the
    answer is the caller's business, so the raw text can be kept whatever it says."""

    def ask(self, images: list[PIL.Image.Image], prompt: str) -> str: ...


def resize_to_area(image: PIL.Image.Image, area: int | None = JUDGE_AREA) -> PIL.Image.Image:
    """RGB copy with about `area` pixels and the same aspect ratio; `None` keeps the size."""
    image = image.convert("RGB")
    if area is None:
        return image
    ratio = image.width / image.height
    width = max(_MULTIPLE, round(math.sqrt(area * ratio) / _MULTIPLE) * _MULTIPLE)
    height = max(_MULTIPLE, round(math.sqrt(area / ratio) / _MULTIPLE) * _MULTIPLE)
    if (width, height) == image.size:
        return image
    return image.resize((width, height), PIL.Image.Resampling.LANCZOS)


def png_data_url(image: PIL.Image.Image) -> str:
    """`data:image/png;base64,...`: how OpenAI-compatible chat APIs take an inline image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
