"""The study's records: the demo records plus held-out toy records (toy.data seed 1, which no toy model trained on),
at the model's size; and the training-seed records the defaults were piloted on (seed 0, never scored in the study)."""
from __future__ import annotations

import json
from pathlib import Path

from core.resources import resource
from studies.cache.run import Record
from toy.data import GLOBAL_EDITS, write_dataset

CONFIGS = resource("configs")
HELDOUT_SEED, PILOT_SEED = 1, 0


def is_local(category: str | None) -> bool:
    """Local edits have a region (add, move, recolor, resize, remove); global ones change the whole image."""
    return category not in GLOBAL_EDITS


def _split(folder: Path, n: int, seed: int, size: int) -> list[Record]:
    manifest = folder / "manifest.jsonl"
    if not manifest.exists() or len(manifest.read_text().splitlines()) < n:
        write_dataset(folder, n, seed=seed, size=size)
    specs = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()][:n]
    return [Record(s, folder) for s in specs]


def study_records(work: Path, heldout: int, size: int, demo: bool = True) -> list[Record]:
    """The demo records (configs/demo_manifest.jsonl), then `heldout` held-out records not among them."""
    out = []
    if demo:
        specs = [json.loads(line) for line in (CONFIGS / "demo_manifest.jsonl").read_text().splitlines() if line]
        out = [Record(s, CONFIGS) for s in specs]
    seen = {r.id for r in out}
    extra = _split(work / f"heldout-{size}", heldout + len(seen), HELDOUT_SEED, size)
    return out + [r for r in extra if r.id not in seen][:heldout]


def pilot_records(work: Path, n: int, size: int) -> list[Record]:
    """Training-seed records for choosing the defaults (the held-out ones are never looked at for that)."""
    return _split(work / f"pilot-{size}", n, PILOT_SEED, size)
