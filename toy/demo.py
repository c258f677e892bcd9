"""The demo's records (configs/demo_manifest.jsonl + demo_images/), written by `python -m jobs.make_demo`.

The demo (`configs/demo.yaml`) edits a few records of the held-out split of the toy data generator
(`toy.data` seed 1: toy-flux-kontext-v2 trained on seed 2, v1 on seed 0), chosen because v2's `full` edit of
each does what its instruction says (measured at 8 steps, 256x256, edit seed 0; PSNR in dB, inside the mask vs
the exact target, the unedited source in brackets):

- toy-1-000041 remove "erase the black square": 36.1 (7.4)
- toy-1-000025 remove "erase the blue triangle": 36.6 (9.7)
- toy-1-000008 recolor "make the blue diamond orange": 11.6 (4.8; the diamond turns orange but loses its shape)
- toy-1-000071 background "make the background yellow": 24.8 (9.2)
- toy-1-000013 grayscale "make the image grayscale": 32.0 (12.6)

The demo now runs toy-flux-kontext-v4 (issue 29), whose `full` edits of the same records, measured the same way,
score 35.1, 36.8, 16.1 (orange throughout, the diamond's right third lost to the background), 31.6 (a corner of
the small diamond painted over) and 34.1.

Each record is a pure function of its (seed, index), so this rewrites the same files every time. The output
folder (default `configs/`) gets `demo_manifest.jsonl` (id, image, instruction, mask, category, target; paths
relative to it) and, in `demo_images/`, the 256x256 source, target and mask PNGs (mask white = edited). PNGs
in `demo_images/` that the manifest does not name are removed, so the folder holds exactly the demo.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from core.resources import resource
from toy.data import make_record

CONFIGS = resource("configs")
MANIFEST_NAME = "demo_manifest.jsonl"
IMAGES_DIR = "demo_images"
SIZE = 256   # the native size of toy-flux-kontext-v2 to v4 (v4 runs the demo)
TRAINING_SEEDS = (0, 2, 8, 9)   # toy.data seeds the toy models trained on (v1, v2, v3, v4): never demo records
# (seed, index) of held-out toy.data records
DEMO_RECORDS: tuple[tuple[int, int], ...] = ((1, 41), (1, 25), (1, 8), (1, 71), (1, 13))


def write_demo(out: Path = CONFIGS, records: tuple[tuple[int, int], ...] = DEMO_RECORDS,
               size: int = SIZE) -> Path:
    """Write the manifest and its PNGs into `out`; returns the manifest's path."""
    if any(seed in TRAINING_SEEDS for seed, _ in records):
        raise ValueError(f"demo records must come from held-out seeds; {TRAINING_SEEDS} are training data")
    out = Path(out)
    images = out / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    rows, written = [], set()
    for seed, index in records:
        rec = make_record(seed, index, size)
        files = {"image": f"{rec.id}.png", "mask": f"{rec.id}-mask.png", "target": f"{rec.id}-target.png"}
        Image.fromarray(rec.source).save(images / files["image"])
        Image.fromarray(rec.mask.astype(np.uint8) * 255).save(images / files["mask"])
        Image.fromarray(rec.target).save(images / files["target"])
        written.update(files.values())
        rows.append({"id": rec.id, "image": f"{IMAGES_DIR}/{files['image']}", "instruction": rec.instruction,
                     "mask": f"{IMAGES_DIR}/{files['mask']}", "category": rec.category,
                     "target": f"{IMAGES_DIR}/{files['target']}"})
    for stale in images.glob("*.png"):
        if stale.name not in written:
            stale.unlink()
    manifest = out / MANIFEST_NAME
    tmp = manifest.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tmp.replace(manifest)   # the manifest appears only once every file it names is written
    return manifest
