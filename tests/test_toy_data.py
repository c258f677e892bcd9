"""The procedural edit data: deterministic per (seed, index), exact targets, masks that cover every change,
and a manifest the pipeline reads."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from toy import data as td
from pipeline.manifest import read_manifest
from pipeline.images import record_image, record_mask
from pipeline.records import validate_record


def test_deterministic_per_seed_and_index():
    a, b = td.make_record(3, 17), td.make_record(3, 17)
    assert a.instruction == b.instruction and a.category == b.category
    assert np.array_equal(a.source, b.source) and np.array_equal(a.target, b.target)
    assert np.array_equal(a.mask, b.mask)
    # the same index in a longer run is the same record; another seed differs
    assert np.array_equal(list(td.iter_records(3, 15, 18))[2].source, a.source)
    assert not np.array_equal(td.make_record(4, 17).source, a.source)


@pytest.mark.parametrize("category", td.CATEGORIES)
def test_every_category_is_an_exact_edit_inside_its_mask(category):
    for index in range(6):
        rec = td.make_record(0, index, category=category)
        assert rec.category == category and rec.source.shape == (128, 128, 3) and rec.source.dtype == np.uint8
        changed = np.any(rec.source != rec.target, axis=2)
        assert changed.any(), "an edit changes something"
        assert not (changed & ~rec.mask).any(), "every changed pixel lies inside the mask"
        if category in td.LOCAL_EDITS:
            assert rec.mask.mean() < 0.5, "local edits touch a small region"


def test_global_targets_follow_their_definitions():
    g = td.make_record(0, 0, category="grayscale")
    assert np.all(g.target[..., 0] == g.target[..., 1])
    expect = np.asarray(Image.fromarray(g.source).convert("L"))
    assert np.abs(g.target[..., 0].astype(int) - expect.astype(int)).max() <= 1   # PIL's luma, ±1 rounding
    inv = td.make_record(0, 0, category="invert")
    assert np.array_equal(inv.target, 255 - inv.source)


def test_instruction_determines_the_target():
    # added objects land on the named cell's centre at the named size: the answer is not a guess
    rec = td.make_record(0, 2, category="add")
    words = rec.instruction.split()
    size = next(w for w in words if w in td.SIZES)
    cell = next(c for c in sorted(td.CELLS, key=len, reverse=True) if rec.instruction.endswith(c))
    cx, cy = td.cell_center(cell, 128)
    ys, xs = np.nonzero(np.any(rec.source != rec.target, axis=2))
    assert abs((xs.min() + xs.max()) / 2 - cx) < 2 and abs((ys.min() + ys.max()) / 2 - cy) < 2   # bbox centre
    r = td.SIZES[size] * 128
    assert xs.max() - xs.min() <= 2 * r + 2


def test_categories_cycle_and_vocabulary_covers_instructions():
    recs = list(td.iter_records(1, 0, 2 * len(td.CATEGORIES)))
    assert [r.category for r in recs] == list(td.CATEGORIES) * 2
    vocab = set(td.vocabulary())
    for r in recs:
        assert set(r.instruction.split()) <= vocab, r.instruction


def test_manifest_is_read_by_the_pipeline(tmp_path):
    manifest = td.write_dataset(tmp_path, n=8, seed=5)
    records = read_manifest(str(manifest))
    assert [r["id"] for r in records] == [f"toy-5-{i:06d}" for i in range(8)]
    for raw, line in zip(records, manifest.read_text().splitlines()):
        rec = validate_record(raw)
        source = record_image(rec)
        mask = record_mask(rec, source.size)
        expected = td.make_record(5, int(rec.id.split("-")[-1]))
        assert np.array_equal(np.asarray(source), expected.source)
        assert np.array_equal(mask, expected.mask)
        target = json.loads(line)["target"]
        assert np.array_equal(np.asarray(Image.open(tmp_path / target)), expected.target)


def test_cli_writes_a_manifest(tmp_path):
    out = subprocess.run([sys.executable, "-m", "jobs.make_toy_data", "--out", str(tmp_path / "d"), "--n", "3",
                          "--seed", "2"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1])["records"] == 3
    lines = (tmp_path / "d" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["id"] == "toy-2-000000"
