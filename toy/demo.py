"""The demo's records (configs/demo_manifest.jsonl + demo_images/), written by `python -m jobs.make_demo`.

The demo (`configs/demo.yaml`) edits a few held-out records of the toy data generator (`toy.data`,
seeds >= 1; the toy model trains on seed 0), chosen because the shipped toy model's `full` edit of each
visibly does what its instruction says (measured at 8 steps, 128x128, edit seed 0; PSNR in dB, inside the
mask vs the exact target, the unedited source in brackets):

- toy-2-000009 remove "delete the black square": 32.6 (9.5)
- toy-1-000145 remove "erase the white circle": 27.6 (8.1)
- toy-2-000032 recolor "make the purple square green": 15.5 (7.7; the square turns green but loses its edges)
- toy-1-000095 background "make the background purple": 25.4 (12.0)
- toy-2-000029 grayscale "convert the image to black and white": 29.0 (13.6)

Each record is a pure function of its (seed, index), so this rewrites the same files every time. The output
folder (default `configs/`) gets `demo_manifest.jsonl` (id, image, instruction, mask, category, target; paths
relative to it) and, in `demo_images/`, the 128x128 source, target and mask PNGs (mask white = edited). PNGs
in `demo_images/` that the manifest does not name are removed, so the folder holds exactly the demo.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from toy.data import make_record

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MANIFEST_NAME = "demo_manifest.jsonl"
IMAGES_DIR = "demo_images"
SIZE = 128   # the toy model's native size
# (seed, index) of toy.data records; never seed 0 (the toy model's training data).
DEMO_RECORDS: tuple[tuple[int, int], ...] = ((2, 9), (1, 145), (2, 32), (1, 95), (2, 29))


def write_demo(out: Path = CONFIGS, records: tuple[tuple[int, int], ...] = DEMO_RECORDS,
               size: int = SIZE) -> Path:
    """Write the manifest and its PNGs into `out`; returns the manifest's path."""
    if any(seed < 1 for seed, _ in records):
        raise ValueError("demo records must come from held-out seeds (>= 1); seed 0 is the training data")
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
