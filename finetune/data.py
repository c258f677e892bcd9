"""Edit triplets from a manifest (`pipeline.manifest`: id, image, instruction, target[, references]) as Ray Data
datasets: one per worker (`train_<rank>`, the records rank, rank + N, rank + 2N, ... in manifest order) and one
validation set (`val`). Reading the image bytes from local disk or object storage is the Ray Data stage; each
worker decodes and encodes its own records once (`worker.py`).

One dataset per worker rather than `streaming_split`: which records a worker holds is then a function of the
manifest and the worker count alone, so a restarted worker group sees the very same records and the resumed run
draws exactly the batches the uninterrupted one would have. Ray Data may deliver a dataset's rows in any order
(blocks finish when they finish): each row carries its manifest position `pos`, and the worker sorts by it.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np

from pipeline import storage as st
from pipeline.manifest import read_manifest


def read_triplets(uri: str, storage: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The manifest's records as plain dicts; a bad row or one without a target is an error (training data
    must be complete)."""
    rows = read_manifest(uri, storage)
    bad = [f"{r['id']}: {r['error']}" for r in rows if r.get("error")]
    bad += [f"{r['id']}: no target" for r in rows if not r.get("error") and not r.get("target")]
    bad += [f"{r['id']}: no source image" for r in rows
            if not r.get("error") and not r.get("image") and not r.get("image_bytes")]
    if bad:
        raise ValueError(f"manifest {uri}: {len(bad)} unusable record(s): " + "; ".join(bad[:5]))
    if not rows:
        raise ValueError(f"manifest {uri} holds no records")
    return [{"pos": i, "id": r["id"], "instruction": r["instruction"], "image": r.get("image"),
             "image_bytes": r.get("image_bytes"), "target": r["target"],
             "references": list(r.get("references") or [])} for i, r in enumerate(rows)]


def fetch(row: dict[str, Any], storage: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Ray Data stage: a record's images as encoded bytes (source, target, further references)."""
    source = row["image_bytes"] or st.read_bytes(row["image"], storage)
    return {"pos": row["pos"], "id": row["id"], "instruction": row["instruction"], "source": source,
            "target": st.read_bytes(row["target"], storage),
            "references": [st.read_bytes(u, storage) for u in row["references"]]}


def decode(data: bytes, size: int) -> np.ndarray:
    """Encoded image bytes -> uint8 RGB at size x size (bicubic), what every family's adapter is given."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))


def datasets(cfg: Any, num_workers: int) -> dict[str, Any]:
    """{"train_<rank>": Dataset, ..., "val": Dataset} for `TorchTrainer(datasets=...)` (unsplit: each worker
    reads `train_<its rank>` whole, and every worker the validation set)."""
    import ray.data

    storage = cfg.data.storage or None
    train = read_triplets(cfg.data.uri, storage)
    if len(train) < num_workers:
        raise ValueError(f"{len(train)} records for {num_workers} workers: every worker needs one")
    val = read_triplets(cfg.data.val_uri, storage) if cfg.data.val_uri else train
    val = val[: cfg.data.val_n]

    def stage(rows: list[dict[str, Any]]) -> Any:
        # a list column per row would make Arrow infer types per block; pickled objects keep rows as they are
        return ray.data.from_items([{"row": r} for r in rows]).map(
            lambda item: {"row": fetch(item["row"], storage)})

    out = {f"train_{rank}": stage(train[rank::num_workers]) for rank in range(num_workers)}
    out["val"] = stage(val)
    return out
