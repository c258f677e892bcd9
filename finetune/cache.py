"""Encoded records cached to storage (`data.cache`: a local folder or an s3:// prefix), so that a restarted
worker, a resumed run or a second fine-tune of the same model on the same data reads the latents and text
embeddings instead of running the encoders again. One file per record, named by a hash of what its encoding
depends on: the model (name, path), the size, the text length, the guidance, and the record's instruction and
image bytes."""
from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import torch

from pipeline import storage as st


class EncodedCache:
    def __init__(self, uri: str, cfg: Any) -> None:
        self.uri = uri
        self.storage = cfg.data.storage or None
        self.salt = json.dumps([cfg.model.name, cfg.model.path, cfg.data.size, cfg.model.max_sequence_length,
                                cfg.train.guidance]).encode()

    def _uri(self, row: dict[str, Any]) -> str:
        h = hashlib.sha256(self.salt)
        for data in [row["source"], row["target"], *row["references"], row["instruction"].encode()]:
            h.update(hashlib.sha256(data).digest())
        return st.join_uri(self.uri, f"{h.hexdigest()[:32]}.pt")

    def get(self, row: dict[str, Any]) -> dict[str, Any] | None:
        try:
            data = st.read_bytes(self._uri(row), self.storage)
        except FileNotFoundError:
            return None
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)

    def put(self, row: dict[str, Any], sample: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(sample, buf)
        st.write_bytes(self._uri(row), buf.getvalue(), self.storage)
