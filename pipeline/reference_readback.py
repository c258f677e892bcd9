"""Pairing by reading the reference back (`units.pairing: read_back`, the default): a unit that needs its
group's `full` edit without emitting it (a later part of a split record, a resumed unit whose `full` is
written) takes `full`'s pixels from the PNG the record's `full` row wrote, instead of re-running it.

- Pixels: the reference a metric compares with is the 8-bit image `full` made; its PNG is lossless, so every
  `*_vs_full` metric is the one an in-memory reference gives.
- Timing: a `full` edit computes every token, so its loop time depends on the model, size, steps and
  sampling (its configuration) and on the record's reference images (context tokens), not on its content.
  `speedup_vs_full` is paired with the median of the last few `full` loop times of the same configuration
  and reference count on the same actor (`unit_stage.timing_key`; `speedup_paired_on = "actor"`, against
  "unit" when the record's own `full` ran in the unit). Qwen-Image-Edit's text length varies with the prompt
  (a few % of its tokens), which this pairing does not match. An actor that has not timed one yet re-runs
  `full`, as before.
- Order: the part of a split record that emits `full` runs it first and writes its PNG from the actor at once
  (`publish`), so the other parts, which run their own edits first, mostly find it there. A part that does
  not waits for it at most one `full` loop's time, then re-runs `full`. Reading and waiting are GPU time
  spent on pairing: `pairing_wait_s`, summed with `pairing_rerun_s` in the run's `extra_gpu_s_for_pairing`.
- Limit: any picture at the path is taken. A `full` whose attempt was killed after publishing is redone and
  written again; a part that read the first picture compared with it (the same pixels on a deterministic
  model, not always bit-equal on a GPU)."""
from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image

from . import storage as st
from .load_stage import png_bytes
from .storage import safe_name

if TYPE_CHECKING:
    from .unit_stage import UnitEdit

POLL_S = 0.05   # wall seconds before the second look for a reference that is not written yet, doubling
MAX_POLL_S = 1.0


def image_uri(output: str, kind: str, config_id: str, record_id: str) -> str:
    """Where an edit's picture (`images`) or keep-mask overlay (`masks`) is written."""
    return st.join_uri(output, kind, config_id, f"{safe_name(record_id)}.png")


def publish(edit: UnitEdit, output: str, storage: st.StorageConfig) -> None:
    """Write a `full` edit's picture now, from the actor, for the record's other parts; the finish stage then
    does not write it again. A failed write is left to the finish stage (the other parts re-run `full`)."""
    uri = image_uri(output, "images", edit.config.config_id, str(edit.row["record_id"]))
    try:
        st.write_bytes(uri, png_bytes(PIL.Image.fromarray(edit.image)), storage)
    except Exception:   # noqa: BLE001 - publishing early is an optimisation; the finish stage writes it
        return
    edit.extra["output_uri"] = uri


def read_back(uri: str, storage: st.StorageConfig, wait_s: float, poll_s: float = POLL_S
              ) -> tuple[np.ndarray | None, float]:
    """The picture at `uri` as H x W x 3 uint8, waiting up to `wait_s` wall seconds for it to be written;
    (None, seconds waited) when it is not there by then."""
    begun, pause = time.monotonic(), poll_s
    while True:
        try:
            if st.exists(uri, storage):
                with PIL.Image.open(io.BytesIO(st.read_bytes(uri, storage))) as img:
                    return np.asarray(img.convert("RGB")), time.monotonic() - begun
        except (OSError, ValueError):   # half-visible object or unreadable: look again until the deadline
            pass
        waited = time.monotonic() - begun
        if waited >= wait_s:
            return None, waited
        time.sleep(min(pause, max(wait_s - waited, 0.0)))
        pause = min(pause * 2, MAX_POLL_S)   # fewer requests to one prefix while many parts wait
