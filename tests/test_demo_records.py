"""The demo's shipped records (configs/demo_manifest.jsonl): toy records at the demo model's size whose masks are
the edited regions, readable by the pipeline, and exactly what `python -m jobs.make_demo` writes."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from toy import data as td
from pipeline.manifest import read_manifest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MANIFEST = CONFIGS / "demo_manifest.jsonl"
FILE_KEYS = ("image", "mask", "target")


def _rows() -> list[dict]:
    return [json.loads(line) for line in MANIFEST.read_text().splitlines() if line.strip()]


def _load(rel: str) -> np.ndarray:
    return np.asarray(Image.open(MANIFEST.parent / rel))


def test_rows_name_existing_files_at_the_demo_models_size():
    from toy.demo import SIZE

    rows = _rows()
    assert 4 <= len(rows) <= 6
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == {"id", "image", "instruction", "mask", "category", "target"}
        assert r["instruction"].strip() and r["category"] in td.CATEGORIES
        for key in FILE_KEYS:
            assert r[key].startswith("demo_images/") and (MANIFEST.parent / r[key]).is_file(), r[key]
            assert Image.open(MANIFEST.parent / r[key]).size == (SIZE, SIZE), r[key]
    assert {"remove", "background"} <= {r["category"] for r in rows}
    assert {r["category"] for r in rows} & {"grayscale", "invert"}, "at least one global edit"


def test_masks_are_the_edited_regions():
    masks = []
    for r in _rows():
        source, target = _load(r["image"])[..., :3].astype(int), _load(r["target"])[..., :3].astype(int)
        mask = _load(r["mask"])
        assert mask.ndim == 2 and set(np.unique(mask)) <= {0, 255}, "binary, white = edited"
        mask = mask > 0
        changed = np.abs(target - source).max(axis=2) > 0
        assert mask.any() and changed.any(), r["id"]
        assert not (changed & ~mask).any(), f"{r['id']}: a changed pixel lies outside the mask"
        if mask.all():   # global edits: the whole image is the edit
            assert r["category"] in td.GLOBAL_EDITS and changed.mean() > 0.5, r["id"]
        else:            # local and background edits: the changed pixels, dilated by the generator's margin
            assert not (mask & ~td.dilate(changed, td.MASK_DILATION)).any(), f"{r['id']}: mask larger than the edit"
        masks.append(mask)
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert not np.array_equal(masks[i], masks[j]), "every record has its own mask"


def test_pipeline_reads_the_manifest():
    recs = read_manifest(str(MANIFEST))
    assert recs and all(rec["error"] is None for rec in recs)
    for rec in recs:
        for key in FILE_KEYS:
            assert Path(rec[key]).is_file(), (rec["id"], key)


def test_make_demo_regenerates_the_committed_files(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jobs.make_demo", "--out", str(tmp_path)],
                          cwd=CONFIGS.parent, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "demo_manifest.jsonl").read_text() == MANIFEST.read_text()
    named = {r[key] for r in _rows() for key in FILE_KEYS}
    assert {f"demo_images/{p.name}" for p in (CONFIGS / "demo_images").iterdir()} == named, "no stray files"
    for rel in named:
        assert np.array_equal(np.asarray(Image.open(tmp_path / rel)), _load(rel)), rel
