"""The study's run configurations: a grid config set for one toy model, and its held-out split at the model's size."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.resources import resource
from studies.toy.models import ToyModel, portable

CONFIG = resource("configs", "toy_ablation.yaml")


def study_config(config: str | Path, model: ToyModel, data: Path, output: Path, steps: int,
                 calibration: str | Path | None = None, finetuned: dict[str, Path] | None = None,
                 threads: int | None = None, manifest: str = "manifest.jsonl") -> Any:
    """A grid config (`configs/toy_ablation.yaml`, `configs/toy_sparse_context.yaml`) set for `model`: every
    model entry runs `model.name` (an entry whose label is in `finetuned` loads that folder instead of its
    own path), the only resolution is the model's size; input, output and steps are the study's; ToPi
    entries without explicit layers (or with `auto`) read `calibration`, which the study passes by name:
    v1 and v2 share a transformer config, so `layers: auto` could not tell their calibrations apart.
    `threads`: the edit actor's CPUs (Ray gives it as many torch threads); `manifest`: which manifest in
    `data` (a subset written beside the split keeps its relative image paths)."""
    import yaml

    import policies
    from pipeline.config import parse_config

    raw = yaml.safe_load(Path(config).read_text())
    raw.update(input=str(data / manifest), output=str(output), steps=int(steps),
               resolutions=[[model.size, model.size]])
    if threads is not None:
        raw["actors"] = {**(raw.get("actors") or {}), "num_cpus": int(threads)}
    entries = []
    for entry in raw["models"]:
        entry = {**entry, "name": model.name}
        if finetuned and entry.get("label") in finetuned:
            entry["path"] = str(finetuned[entry["label"]])
        entries.append(entry)
    raw["models"] = entries
    if calibration is not None:
        raw["policies"] = [{**p, "layers": portable(Path(calibration))}
                           if isinstance(p, dict) and p.get("name") == "topi" and p.get("layers", "auto") == "auto"
                           else p for p in raw["policies"]]
    return parse_config(raw, known_policies=policies.REGISTRY)


def heldout(data: Path, n: int, size: int) -> Path:
    """The held-out split (toy.data seed 1) at the model's size, written once; a split written at another
    size is refused (each model has its own working folder)."""
    from PIL import Image

    from toy.data import write_dataset

    manifest = data / "manifest.jsonl"
    if not manifest.exists():
        return write_dataset(data, n, seed=1, size=size)
    first = json.loads(manifest.read_text().splitlines()[0])
    with Image.open(data / first["image"]) as im:
        if im.size != (size, size):
            raise ValueError(f"{data} holds {im.width}x{im.height} records, the model edits {size}x{size}: "
                             "use another --out")
    return manifest
