"""Read our own manifest format (JSONL, JSON array or Parquet; local or s3://).

One record per row: ``id``, ``image`` (URI), ``instruction``, optional ``mask``
(PNG URI, white = edited), ``category``, ``references`` (list of URIs), optional ``target``
(the exact expected output, PNG URI; shown in reports), optional ``target_prompt`` (a caption of the
wanted result; the CLIP metrics score the edit against it).  Relative
URIs are resolved against the manifest's directory.  Problems with one row
(unparseable line, missing id, duplicate id) become that record's ``error`` so it
turns into an error row downstream; only an unreadable manifest raises.
"""

from __future__ import annotations

import io
import json
from typing import Any, Mapping

import pyarrow.parquet as pq

from pipeline import storage as st
from pipeline.records import new_record


def read_manifest(uri: str, storage: st.StorageLike = None) -> list[dict[str, Any]]:
    """All records of a manifest as plain dicts (keys = ``records.RECORD_FIELDS``)."""
    base = st.parent_uri(uri)
    if uri.endswith(".parquet") or uri.endswith(".pq"):
        rows = pq.read_table(io.BytesIO(st.read_bytes(uri, storage))).to_pylist()
        raw = [(i + 1, row, None) for i, row in enumerate(rows)]
    else:
        raw = list(_json_rows(st.read_bytes(uri, storage).decode("utf-8-sig"), uri))
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for lineno, row, error in raw:
        rec = _to_record(row, lineno, base, error)
        if rec["error"] is None and rec["id"] in seen:
            rec["error"] = f"duplicate id {rec['id']!r} (row {lineno} of {uri})"
            rec["id"] = f"{rec['id']}#row{lineno}"  # keep ids unique for the output rows
        seen.add(rec["id"])
        records.append(rec)
    return records


def _json_rows(text: str, uri: str):
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array of objects
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"manifest {uri} is not valid JSON: {exc}") from None
        for i, row in enumerate(rows):
            yield i + 1, row, None
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield lineno, {}, f"invalid JSON on line {lineno} of {uri}: {exc.msg}"


def _to_record(row: Any, lineno: int, base: str, error: str | None) -> dict[str, Any]:
    if error is None and not isinstance(row, Mapping):
        error = f"row {lineno} is not an object"
        row = {}
    rid = row.get("id")
    if error is None and (rid is None or str(rid).strip() == ""):
        error = f"row {lineno}: missing 'id'"
    rec = new_record(
        id=str(rid) if rid not in (None, "") else f"row{lineno}",
        instruction=row.get("instruction"),
        category=None if row.get("category") is None else str(row["category"]),
        error=error,
    )
    prompt = row.get("target_prompt")
    if isinstance(prompt, str) and prompt.strip():
        rec["target_prompt"] = prompt.strip()
    elif not isinstance(prompt, (str, type(None))) and rec["error"] is None:
        rec["error"] = f"row {lineno}: 'target_prompt' must be a string"
    image = row.get("image")
    if isinstance(image, (bytes, bytearray)):
        rec["image_bytes"] = bytes(image)  # Parquet manifests may embed the image
    elif isinstance(image, str) and image:
        rec["image"] = st.resolve_uri(image, base)
    elif image is not None and rec["error"] is None:
        rec["error"] = f"row {lineno}: 'image' must be a URI string"
    for key in ("mask", "target"):
        value = row.get(key)
        if isinstance(value, str) and value:
            rec[key] = st.resolve_uri(value, base)
    refs = row.get("references") or []
    if isinstance(refs, str):
        refs = [refs]
    if isinstance(refs, (list, tuple)) and all(isinstance(r, str) and r for r in refs):
        rec["references"] = [st.resolve_uri(r, base) for r in refs]
    elif rec["error"] is None:
        rec["error"] = f"row {lineno}: 'references' must be a list of URIs"
    return rec
