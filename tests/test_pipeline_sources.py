"""pipeline.manifest / benchmarks / images / sources: readers and image/mask loading."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import storage as st
from pipeline.images import (
    decode_pie_mask,
    load_image,
    load_mask,
    mask_to_png_bytes,
    record_image,
    record_mask,
)
from pipeline.records import RecordError, validate_record
from pipeline.sources import detect_format, read_records


def png_bytes(size=(8, 6), color=(200, 10, 10), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ PIE masks


def reference_mask_decode(encoded, shape=(512, 512)):
    """PIE-Bench's evaluation/evaluate.py::mask_decode, transcribed as the oracle."""
    length = shape[0] * shape[1]
    arr = np.zeros((length,))
    for i in range(0, len(encoded), 2):
        splice_len = min(encoded[i + 1], length - encoded[i])
        for j in range(splice_len):
            arr[encoded[i] + j] = 1
    arr = arr.reshape(shape[0], shape[1])
    arr[0, :] = 1
    arr[-1, :] = 1
    arr[:, 0] = 1
    arr[:, -1] = 1
    return arr


def test_decode_pie_mask_matches_reference():
    rng = np.random.default_rng(0)
    starts = np.sort(rng.choice(512 * 512 - 10, 40, replace=False))
    rle = []
    for s in starts:
        rle += [int(s), int(rng.integers(1, 3000))]
    rle += [512 * 512 - 5, 100]  # runs past the end are clipped
    ours = decode_pie_mask(rle)
    assert ours.dtype == bool and ours.shape == (512, 512)
    np.testing.assert_array_equal(ours, reference_mask_decode(rle).astype(bool))


def test_decode_pie_mask_small_exact():
    m = decode_pie_mask([6, 2, 13, 1], shape=(4, 5))
    # flat index 6,7 -> row 1 cols 1,2 ; 13 -> row 2 col 3; plus the 1-px border
    expected = np.ones((4, 5), bool)
    expected[1:3, 1:4] = False
    expected[1, 1] = expected[1, 2] = expected[2, 3] = True
    np.testing.assert_array_equal(m, expected)
    assert decode_pie_mask([], shape=(3, 3)).sum() == 8  # only the border
    with pytest.raises(RecordError, match="odd length"):
        decode_pie_mask([1, 2, 3])


# ------------------------------------------------------------ image / mask I/O


def test_load_image_and_errors(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes(mode="RGBA", color=(1, 2, 3, 4)))
    img = load_image(str(tmp_path / "a.png"))
    assert img.mode == "RGB" and img.size == (8, 6)
    with pytest.raises(RecordError, match=r"image not found: .*missing\.png"):
        load_image(str(tmp_path / "missing.png"))
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(RecordError, match=r"unreadable image .*bad\.png"):
        load_image(str(tmp_path / "bad.png"))
    (tmp_path / "trunc.png").write_bytes(png_bytes(size=(64, 64))[:60])
    with pytest.raises(RecordError, match="unreadable image"):
        load_image(str(tmp_path / "trunc.png"))


def test_load_mask_white_is_edited_and_size_checked(tmp_path):
    arr = np.zeros((6, 8), np.uint8)
    arr[2:4, 3:6] = 255
    Image.fromarray(arr, "L").save(tmp_path / "m.png")
    mask = load_mask(str(tmp_path / "m.png"), (8, 6))
    assert mask.dtype == bool and mask.shape == (6, 8) and mask.sum() == 6 and mask[2, 3]
    rgb = np.stack([arr] * 3, -1)
    Image.fromarray(rgb, "RGB").save(tmp_path / "m_rgb.png")
    np.testing.assert_array_equal(load_mask(str(tmp_path / "m_rgb.png"), (8, 6)), mask)
    with pytest.raises(RecordError, match=r"mask size 8x6 does not match image size 16x12"):
        load_mask(str(tmp_path / "m.png"), (16, 12))
    with pytest.raises(RecordError, match="mask not found"):
        load_mask(str(tmp_path / "nope.png"), (8, 6))
    # round trip through the PNG writer used for PIE masks
    (tmp_path / "pie.png").write_bytes(mask_to_png_bytes(mask))
    np.testing.assert_array_equal(load_mask(str(tmp_path / "pie.png"), (8, 6)), mask)


def test_record_image_and_mask_dispatch(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes(size=(512, 512)))
    rec = validate_record({"id": "p", "image": str(tmp_path / "a.png"), "instruction": "x", "mask_rle": [0, 10]})
    img = record_image(rec)
    mask = record_mask(rec, img.size)
    assert mask.shape == (512, 512) and mask[0, :10].all()
    with pytest.raises(RecordError, match="mask size 512x512 does not match image size 256x256"):
        record_mask(rec, (256, 256))
    embedded = {"id": "g", "image_bytes": png_bytes(size=(5, 4)), "instruction": "x"}
    assert record_image(embedded).size == (5, 4)
    assert record_mask(embedded, (5, 4)) is None


# --------------------------------------------------------------------- manifest


def write_images(root, names, size=(8, 6)):
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(png_bytes(size=size))


def test_read_jsonl_manifest_resolves_relative_uris_and_flags_bad_rows(tmp_path):
    write_images(tmp_path, ["imgs/a.png", "masks/a.png"])
    lines = [
        json.dumps({"id": "a", "image": "imgs/a.png", "instruction": "red", "mask": "masks/a.png",
                    "category": "color", "references": ["imgs/a.png", "s3://b/r.png"],
                    "target_prompt": " a red car "}),
        "",
        "{not json",
        json.dumps({"image": "imgs/a.png", "instruction": "x"}),
        json.dumps({"id": "a", "image": "/abs/b.png", "instruction": "dup"}),
        json.dumps({"id": "e", "image": "imgs/a.png", "instruction": ""}),
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(lines))
    recs = read_records(str(tmp_path / "m.jsonl"))
    assert [r["id"] for r in recs] == ["a", "row3", "row4", "a#row5", "e"]
    a = recs[0]
    assert a["image"] == str(tmp_path / "imgs/a.png") and a["mask"] == str(tmp_path / "masks/a.png")
    assert a["references"] == [str(tmp_path / "imgs/a.png"), "s3://b/r.png"] and a["error"] is None
    assert a["target_prompt"] == "a red car" and recs[3]["target_prompt"] is None
    assert "invalid JSON on line 3" in recs[1]["error"]
    assert "missing 'id'" in recs[2]["error"]
    assert "duplicate id 'a'" in recs[3]["error"]
    validate_record(a)
    for bad in recs[1:]:
        with pytest.raises(RecordError):
            validate_record(bad)


def test_read_parquet_manifest(tmp_path):
    write_images(tmp_path, ["x.png"])
    pq.write_table(
        pa.table({"id": ["1", "2"], "image": ["x.png", "x.png"], "instruction": ["a", "b"],
                  "references": [["x.png"], []], "target_prompt": ["a cat", None]}),
        tmp_path / "m.parquet",
    )
    recs = read_records(str(tmp_path / "m.parquet"))
    assert detect_format(str(tmp_path / "m.parquet")) == "manifest"
    assert [r["image"] for r in recs] == [str(tmp_path / "x.png")] * 2
    assert recs[0]["references"] == [str(tmp_path / "x.png")]
    assert [r["target_prompt"] for r in recs] == ["a cat", None]
    assert all(r["error"] is None for r in recs)


# -------------------------------------------------------------------- benchmarks


def test_read_pie_bench(tmp_path):
    write_images(tmp_path / "annotation_images", ["0_random_140/000000000000.jpg"], size=(512, 512))
    mapping = {
        "000000000000": {
            "image_path": "0_random_140/000000000000.jpg",
            "original_prompt": "a [cat] sitting",
            "editing_prompt": "a [dog] sitting",
            "editing_instruction": "Make the cat a dog",
            "editing_type_id": "0",
            "blended_word": "cat dog",
            "mask": [1000, 20, 5000, 3],
        },
        "000000000001": {"image_path": "x.jpg", "editing_instruction": "no mask"},
    }
    (tmp_path / "mapping_file.json").write_text(json.dumps(mapping))
    assert detect_format(str(tmp_path / "mapping_file.json")) == "pie"
    recs = read_records(str(tmp_path / "mapping_file.json"))
    assert len(recs) == 2
    r = recs[0]
    assert r["image"] == str(tmp_path / "annotation_images/0_random_140/000000000000.jpg")
    assert r["instruction"] == "Make the cat a dog" and r["category"] == "0"
    assert r["mask_rle"] == [1000, 20, 5000, 3] and r["mask_shape"] == [512, 512]
    # PIE-Bench's target prompt: editing_prompt with its [ ] markers removed (evaluate.py does the same)
    assert r["target_prompt"] == "a dog sitting" and recs[1]["target_prompt"] is None
    rec = validate_record(r)
    assert rec.target_prompt == "a dog sitting"
    mask = record_mask(rec, record_image(rec).size)
    assert mask.sum() == 20 + 3 + (4 * 512 - 4)
    assert "missing mask" in recs[1]["error"]
    custom = read_records(str(tmp_path / "mapping_file.json"), image_root="/data/pie")
    assert custom[0]["image"] == "/data/pie/0_random_140/000000000000.jpg"


def gedit_table(with_raw=True):
    img = {"bytes": png_bytes(size=(10, 10)), "path": None}
    cols = {
        "task_type": ["color_alter", "color_alter", "style_change"],
        "key": ["k1", "k1", "k2"],
        "instruction": ["make it blue", "把它变成蓝色", "make it van gogh"],
        "instruction_language": ["en", "cn", "en"],
        "input_image": [img, img, img],
    }
    if with_raw:
        raw = {"bytes": png_bytes(size=(20, 20)), "path": "raw.png"}
        cols["input_image_raw"] = [raw, raw, None]
    return pa.table(cols)


def test_read_gedit_bench_english_rows_with_embedded_images(tmp_path):
    pq.write_table(gedit_table(), tmp_path / "gedit.parquet")
    assert detect_format(str(tmp_path / "gedit.parquet")) == "gedit"
    recs = read_records(str(tmp_path / "gedit.parquet"))
    assert [r["id"] for r in recs] == ["color_alter/k1", "style_change/k2"]
    assert [r["instruction"] for r in recs] == ["make it blue", "make it van gogh"]
    assert recs[0]["image"] is None and recs[0]["category"] == "color_alter"
    assert record_image(recs[0]).size == (20, 20)  # input_image_raw preferred
    assert record_image(recs[1]).size == (10, 10)  # falls back to input_image
    # a folder of shards (the HF layout) is read as a whole
    (tmp_path / "shards").mkdir()
    pq.write_table(gedit_table(with_raw=False), tmp_path / "shards" / "train-00000-of-00002.parquet")
    pq.write_table(gedit_table(with_raw=False), tmp_path / "shards" / "train-00001-of-00002.parquet")
    assert len(read_records(str(tmp_path / "shards"), fmt="gedit")) == 4
    assert detect_format(str(tmp_path / "shards")) == "gedit"


def test_read_imgedit(tmp_path):
    write_images(tmp_path, ["singleturn/animal/1.jpg"])
    data = {
        "1": {"id": "singleturn/animal/1.jpg", "prompt": "Add a hat to the cat", "edit_type": "add"},
        "2": {"prompt": "no id"},
    }
    (tmp_path / "basic_edit.json").write_text(json.dumps(data))
    recs = read_records(str(tmp_path / "basic_edit.json"))
    assert recs[0]["image"] == str(tmp_path / "singleturn/animal/1.jpg")
    assert recs[0]["instruction"] == "Add a hat to the cat" and recs[0]["category"] == "add"
    assert "missing 'id'" in recs[1]["error"]
    (tmp_path / "renamed.json").write_text(json.dumps(data))
    assert detect_format(str(tmp_path / "renamed.json")) == "imgedit"


def test_unknown_format_is_a_clear_error(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"a": {"b": 1}}))
    with pytest.raises(ValueError, match="set input.format"):
        read_records(str(tmp_path / "x.json"))
    with pytest.raises(ValueError, match="is not one of"):
        read_records(str(tmp_path / "x.json"), fmt="coco")


# ---------------------------------------------------------------------------- S3


def test_manifest_and_images_from_s3(moto_s3, s3_prefix):
    st.write_bytes(f"{s3_prefix}/data/imgs/a.png", png_bytes(size=(8, 6)))
    mask = np.zeros((6, 8), bool)
    mask[1:3, 1:3] = True
    st.write_bytes(f"{s3_prefix}/data/masks/a.png", mask_to_png_bytes(mask))
    manifest = "\n".join(
        [
            json.dumps({"id": "a", "image": "imgs/a.png", "mask": "masks/a.png", "instruction": "red"}),
            json.dumps({"id": "b", "image": "imgs/missing.png", "instruction": "red"}),
        ]
    )
    st.write_bytes(f"{s3_prefix}/data/manifest.jsonl", manifest.encode())
    recs = read_records(f"{s3_prefix}/data/manifest.jsonl")
    assert recs[0]["image"] == f"{s3_prefix}/data/imgs/a.png"
    rec = validate_record(recs[0])
    img = record_image(rec)
    assert img.size == (8, 6)
    np.testing.assert_array_equal(record_mask(rec, img.size), mask)
    with pytest.raises(RecordError, match=r"image not found: s3://.*imgs/missing\.png"):
        record_image(validate_record(recs[1]))


def test_gedit_parquet_from_s3(moto_s3, s3_prefix):
    buf = io.BytesIO()
    pq.write_table(gedit_table(), buf)
    st.write_bytes(f"{s3_prefix}/gedit/data/train-00000-of-00001.parquet", buf.getvalue())
    recs = read_records(f"{s3_prefix}/gedit/data")
    assert [r["id"] for r in recs] == ["color_alter/k1", "style_change/k2"]
