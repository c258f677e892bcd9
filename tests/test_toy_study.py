"""The toy study on any toy model (v2 by default): model parameterisation, TokenDrop at two blur kernels, the
labelled picture grid, per-category tables and findings computed per kernel. Synthetic rows, no edits."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from studies.sparse_context import doc as sc_doc
from studies.sparse_context import run as sc_run
from studies.toy import calibration as toy_calibration
from studies.toy import config as toy_config
from studies.toy import doc as toy_doc
from studies.toy import findings, picture_grid
from studies.toy import labels as toy_labels
from studies.toy import matched as toy_matched
from studies.toy import models as toy_models
from studies.toy import run as toy_run
from studies.toy import scoring as toy_scoring
from studies.toy import tables as toy_tables

V2 = toy_models.ToyModel("toy-flux-kontext-v2", 256)
V1 = toy_models.ToyModel("toy-flux-kontext", 128)
CATS = ("recolor", "remove", "grayscale")


# ------------------------------------------------------------------ synthetic rows

def _png(path: Path, color: tuple[int, int, int], size: int = 32) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)
    return str(path)


def _manifest(tmp: Path, n_per_cat: int = 2) -> Path:
    data = tmp / "data"
    lines = []
    for c, cat in enumerate(CATS):
        for i in range(n_per_cat):
            rid = f"{cat}-{i}"
            _png(data / "source" / f"{rid}.png", (10 * c, 0, 0))
            _png(data / "target" / f"{rid}.png", (0, 10 * c, 0))
            lines.append(json.dumps({"id": rid, "image": f"source/{rid}.png", "target": f"target/{rid}.png",
                                     "mask": f"mask/{rid}.png", "category": cat, "instruction": f"do {cat} {i}"}))
    (data / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return data


def _claims(tmp: Path | None = None, grid_bg_bonus: float = 1.0) -> pd.DataFrame:
    """Every configuration of the ablation grid (and the matched arms) on 2 records per category; the grid
    kernel's TokenDrop keeps the background `grid_bg_bonus` dB better than the paper's."""
    rows = []

    def add(policy, params, bg, edit, keep=1.0, **extra):
        for c, cat in enumerate(CATS):
            for i in range(2):
                rid = f"{cat}-{i}"
                uri = None
                if tmp is not None:
                    uri = _png(tmp / "out" / toy_labels.label(policy, params).replace(" ", "_") / f"{rid}.png",
                               (0, 0, 40 + len(rows) % 200))
                rows.append({"record_id": rid, "model": V2.name, "category": cat, "policy": policy,
                             "label": toy_labels.label(policy, params), "reg": bool(params.get("reg", False)),
                             "ratio": params.get("ratio"), "omega": params.get("omega"),
                             "blur": params.get("blur"), "budget_free": params.get("budget") is None,
                             "keep_ratio_mean": keep + 0.1 * i, "psnr_bg": None if cat == "grayscale" else bg + c,
                             "psnr_edit": edit + c, "psnr_mask_vs_source": 20.0 + (5 if params.get("reg") else 0),
                             "psnr_vs_full": None if policy == "full" else 30.0, "active_fraction": extra.get("active"),
                             "mask_fraction": 0.05 + 0.1 * i + 0.2 * c, "runtime_s": 1.0, "status": "ok",
                             "output_uri": uri, "policy_applied": json.dumps(extra.get("applied", {}))})

    add("full", {}, 30.0, 20.0)
    for ratio, bg in ((0.25, 28.0), (0.5, 26.0), (0.75, 24.0)):
        add("random", {"ratio": ratio, "reg": False}, bg, 18.0)
        add("random", {"ratio": ratio, "reg": True}, bg + 1, 15.0)
    for omega in (0.0, 0.4):
        for blur, kernel in (("paper", (11, 1.0)), ("grid", (3, 0.25))):
            bonus = grid_bg_bonus if blur == "grid" else 0.0
            applied = {"kernel": kernel[0], "blur_sigma": kernel[1]}
            add("tokendrop", {"omega": omega, "reg": True, "blur": blur}, 29.0 + bonus, 17.0, keep=0.5, applied=applied)
            add("tokendrop", {"omega": omega, "reg": False, "blur": blur}, 27.0, 18.0, keep=0.6, applied=applied)
            for reg in (False, True):
                add("random", {"budget": 1, "reg": reg, "matched_omega": omega, "matched_blur": blur},
                    25.0, 16.0, keep=0.5)
    add("topi", {"tau": 0.85}, 29.5, 19.0, keep=0.7)
    add("spotedit", {"tau": 0.2}, 29.8, 19.5, active=0.4)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ the model

def test_toy_model_grid_and_default_out():
    assert (V2.grid, V2.tokens, V2.card) == (16, 256, "models/toy-flux-kontext-v2/MODEL_CARD.md")
    assert (V1.grid, V1.tokens) == (8, 64)
    assert toy_models.DEFAULT_MODEL == "toy-flux-kontext-v2"
    assert toy_models.default_out("toy-flux-kontext-v2") == "results/toy-v2"
    assert toy_models.default_out("toy-flux-kontext") == "results/toy"   # v1 keeps its folder


def test_toy_model_reads_the_size_from_the_model_folder(tmp_path, monkeypatch):
    from dataclasses import replace

    from actors import models

    folder = tmp_path / "toy-flux-kontext-v2"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    (folder / "dropedit.json").write_text(json.dumps({"max_sequence_length": 32, "sizes": [[256, 256]]}))
    v2 = models.model("toy-flux-kontext-v2")
    monkeypatch.setitem(models.MODELS, "toy-flux-kontext-v2", replace(v2, shipped=folder))
    assert toy_models.toy_model("toy-flux-kontext-v2") == V2
    assert toy_models.toy_model("toy-flux-kontext-v2", 128).size == 128          # --size overrides
    assert toy_models.toy_model("toy-flux-kontext").size == 128                  # v1's shipped folder
    monkeypatch.setitem(models.MODELS, "toy-flux-kontext-v2", replace(v2, shipped=tmp_path / "absent"))
    with pytest.raises(ValueError, match="not in .* yet"):
        toy_models.toy_model("toy-flux-kontext-v2")
    with pytest.raises(ValueError, match="not a shipped toy model"):
        toy_models.toy_model("flux-kontext")


def test_intro_names_the_model_its_grid_and_both_kernels():
    df = _claims()

    class Cfg:
        steps = 28

    text = toy_doc._intro(df, Cfg, ["- a finding"], V2, "results/toy-v2", toy_labels.tokendrop_variants(df))
    assert "16x16 = 256 source tokens" in text and "0.39% of the image" in text
    assert "`toy-flux-kontext-v2` (see `models/toy-flux-kontext-v2/MODEL_CARD.md`)" in text
    assert "256x256, 28 steps" in text and "`results/toy-v2/`" in text
    assert "`blur: paper`: k=11, σ=1" in text and "`blur: grid`: k=3, σ=0.25" in text
    assert "`python -m jobs.toy_results`" in text                                # v2 is the default
    v1 = toy_doc._intro(df.assign(policy_applied="{}"), Cfg, [], V1, "results/toy", [(0.4, "paper"), (0.4, "grid")])
    assert "8x8 = 64 source tokens" in v1 and "1.6% of the image" in v1 and "128x128" in v1
    assert "--model toy-flux-kontext`" in v1
    assert "`blur: grid`: k=1, σ=0.125" in v1      # computed by policies.tokendrop for an 8x8 grid
    assert "8x8 = 64" not in text and "128x128" not in text


def test_study_config_runs_the_named_model_at_its_size(tmp_path):
    from pipeline.config import expand_grid

    calib = toy_calibration.CALIBRATIONS / "toy-flux-kontext.json"      # any valid calibration file
    cfg = toy_config.study_config(toy_config.CONFIG, V2, tmp_path / "data", tmp_path / "run", 4, calib, threads=2)
    assert [m.name for m in cfg.models] == [V2.name] and cfg.resolutions == ((256, 256),)
    assert cfg.input.uri == str(tmp_path / "data" / "manifest.jsonl") and cfg.output == str(tmp_path / "run")
    assert cfg.steps == 4 and cfg.actors.num_cpus == 2
    topi = [p for p in cfg.policies if p.name == "topi"]
    assert topi and all(Path(p.params["layers"]).resolve() == calib.resolve() for p in topi)
    grid = expand_grid(cfg)
    blurs = {(c.policy_params["omega"], c.policy_params["reg"], c.policy_params["blur"])
             for c in grid if c.policy == "tokendrop"}
    assert blurs == {(w, r, b) for w in (0.0, 0.4) for r in (True, False) for b in ("paper", "grid")}
    assert {(c.height, c.width) for c in grid} == {(256, 256)}

    finetuned = {label: sc_run.finetune_dir(tmp_path, label) for label in sc_run.finetune_configs(V2.name)}
    scfg = toy_config.study_config(sc_run.CONFIG, V2, tmp_path / "data", tmp_path / "sparse", 4, finetuned=finetuned)
    assert {m.name for m in scfg.models} == {V2.name}
    paths = {m.key: m.path for m in scfg.models}
    assert paths == {"toy": None, "toy-ft-nodrop": str(tmp_path / "finetune" / "nodrop"),
                     "toy-ft-drop": str(tmp_path / "finetune" / "drop")}


def test_v2_finetune_configs_differ_from_each_other_in_the_drop_only():
    from finetune.config import load_config

    def load(path):
        return load_config(str(path)).model_dump(mode="json")

    configs = sc_run.finetune_configs("toy-flux-kontext-v2")
    assert set(configs) == {"toy-ft-nodrop", "toy-ft-drop"}
    drop, nodrop = load(configs["toy-ft-drop"]), load(configs["toy-ft-nodrop"])
    assert drop["transformer"].pop("reference_drop") == [0.0, 0.95]
    assert nodrop["transformer"].pop("reference_drop") is None
    assert drop["name"] != nodrop["name"] and "v2" in drop["name"]       # their own checkpoints
    for cfg in (drop, nodrop):
        for key in ("name", "output"):
            cfg.pop(key)
    assert drop == nodrop
    assert drop["init_from"] == "models/toy-flux-kontext-v2" and drop["model"]["image_size"] == 256
    v1 = sc_run.finetune_configs("toy-flux-kontext")
    assert load(v1["toy-ft-drop"])["init_from"] == "models/toy-flux-kontext"   # v1's kept
    with pytest.raises(ValueError, match="no Sparse Context fine-tune configs"):
        sc_run.finetune_configs("flux-kontext")


def test_sparse_context_setup_counts_the_model_tokens():
    df = pd.DataFrame({"steps": [28]})
    text = sc_doc._setup(df, {}, 64, V2)
    assert "of the 256 source tokens\n(16x16)" in text and "⌈keep·256⌉" in text
    assert "configs/finetune_toy_v2_nodrop.yaml" in text and "64 source" not in text
    assert "⌈keep·64⌉" in sc_doc._setup(df, {}, 64, V1)


def test_matched_arms_load_the_named_model_and_match_per_kernel(tmp_path, monkeypatch):
    import actors

    data = _manifest(tmp_path)
    loaded, budgets = [], []

    class FakeEditor:
        def __init__(self, pipe, policy):
            self.policy = policy

        def edit(self, image, instruction, **kw):
            budgets.append(self.policy.params()["budget"])
            keep = 0.5

            class R:
                image = Image.new("RGB", (kw["width"], kw["height"]))
                keep_ratio_mean, seconds = keep, 0.01
            return R

    monkeypatch.setattr(actors, "load_pipeline", lambda name, path=None, device=None: loaded.append(name) or "pipe")
    monkeypatch.setattr(actors, "Editor", FakeEditor)
    td = pd.DataFrame([{"record_id": "recolor-0", "model": V2.name, "category": "recolor", "policy": "tokendrop",
                        "reg": True, "status": "ok", "omega": 0.4, "blur": blur, "keep_ratio_per_step": [1.0, 0.5],
                        "keep_ratio_mean": 0.75, "height": 256, "width": 256, "seed": 0}
                       for blur in ("paper", "grid")])
    out = tmp_path / "work"
    out.mkdir()
    rows = toy_matched.matched_arms(td, data, out, 2, V2.name)
    assert loaded == [V2.name]
    assert budgets == [[256, 128]] * 4                  # 16x16 tokens, per step
    assert sorted(zip(rows.matched_blur, rows.reg)) == [("grid", False), ("grid", True), ("paper", False),
                                                        ("paper", True)]
    assert all(Path(u).is_file() for u in rows.output_uri)
    assert len({Path(u).parent.parent.name for u in rows.output_uri}) == 2     # omega0.4-paper, omega0.4-grid
    again = toy_matched.matched_arms(td, data, out, 2, V2.name)                     # resumed: nothing to do
    assert loaded == [V2.name] and len(again) == 4


def test_heldout_split_refuses_another_size(tmp_path):
    data = _manifest(tmp_path)                     # 32 px synthetic records
    assert toy_config.heldout(data, 6, 32) == data / "manifest.jsonl"
    with pytest.raises(ValueError, match="use another --out"):
        toy_config.heldout(data, 6, 256)


# ------------------------------------------------------------------ labels and findings per kernel

def test_tokendrop_kernel_labels_and_variants():
    assert toy_labels.label("tokendrop", {"omega": 0.4, "reg": True, "blur": "grid"}) == \
        "TokenDrop ω=0.4, grid kernel, with reg"
    assert toy_labels.label("tokendrop", {"omega": 0.0, "reg": False, "blur": "paper"}) == \
        "TokenDrop ω=0.0, paper kernel, no reg"
    assert toy_labels.label("tokendrop", {"omega": 0.4, "reg": False}) == "TokenDrop ω=0.4, no reg"   # unset: unnamed
    assert toy_labels.label("random", {"budget": [3], "reg": True, "matched_omega": 0.4, "matched_blur": "grid"}) == \
        "random, budget of TokenDrop ω=0.4 (grid kernel), with reg"
    assert toy_labels.tokendrop_variants(_claims()) == [(0.0, "paper"), (0.0, "grid"), (0.4, "paper"), (0.4, "grid")]
    labels = toy_labels.method_labels(_claims())
    assert labels[0] == "full" and labels.index("TokenDrop ω=0.0, paper kernel, with reg") < \
        labels.index("TokenDrop ω=0.0, grid kernel, with reg") < labels.index("ToPi τ=0.85, prune")
    assert len(labels) == len(set(_claims().label))      # every configuration, once


def test_findings_per_kernel_follow_the_numbers():
    df = _claims(grid_bg_bonus=-3.0)       # the grid kernel's TokenDrop+reg: bg below TokenDrop without reg
    paper = findings.matched_budgets(df, toy_labels.label, 0.4, "paper")
    grid = findings.matched_budgets(df, toy_labels.label, 0.4, "grid")
    assert paper.startswith("- (b) ω = 0.4, paper kernel:") and "**reproduces**" in paper
    assert grid.startswith("- (b) ω = 0.4, grid kernel:") and "**does not reproduce**" in grid
    assert "bg PSNR 26.50 vs 25.50 and 27.50 dB" in grid      # means over recolor (+0) and remove (+1)
    kernels = findings.kernels(df, toy_labels.label, toy_labels.tokendrop_variants(df))
    assert "ω = 0.0: keep ratio 0.550 vs 0.550, bg PSNR -3.00 dB, edit PSNR +0.00 dB (**background worse, edit equal** with the grid kernel)" in kernels
    assert findings.kernels(df, toy_labels.label, [(0.4, "paper")]) == ""     # one kernel: nothing to compare
    assert findings.keep_vs_area(0.4, 0.3, 0.2, "grid").startswith("- (d) ω = 0.4, grid kernel:")
    assert "**does not reproduce**" in findings.keep_vs_area(0.4, float("nan"), 0.2)


def test_correlation_of_a_constant_is_undefined_not_an_error():
    r, rho = toy_scoring.correlation(np.array([0.1, 0.2, 0.3]), np.array([1.0, 1.0, 1.0]))
    assert math.isnan(r) and math.isnan(rho)


def test_category_table_covers_every_method():
    df = _claims()
    rows = [(lab, df.label == lab) for lab in toy_labels.method_labels(df)]
    bg = toy_tables.category_table(df, rows, "psnr_bg").splitlines()
    assert bg[0] == "| configuration | recolor | remove | grayscale | all |"
    assert "| full | 30.00 | 31.00 | – | 30.50 |" in bg            # grayscale has no background
    assert len(bg) == 2 + len(rows)
    edit = toy_tables.category_table(df, rows, "psnr_edit")
    assert "| SpotEdit τ=0.2, spotfusion | 19.50 | 20.50 | 21.50 | 20.50 |" in edit


def test_write_doc_on_v2(tmp_path):
    df = _claims(tmp_path)
    data = _manifest(tmp_path)

    class Cfg:
        steps = 28

    docs = tmp_path / "docs"
    edits = picture_grid.study_grid(df, data, docs / "toy-results" / "edits.png")
    toy_doc.write_doc(df, docs, Cfg, 60.0, None, model=V2, out="results/toy-v2",
                      calibration=toy_calibration.CALIBRATIONS / "toy-flux-kontext-v2.json", edits=edits)
    text = (docs / "toy-results.md").read_text()
    for needle in ("### ω=0.4, grid kernel", "### TokenDrop ω=0.0, paper kernel", "(b′)",
                   "| 0.4 | grid |", "![edits](toy-results/edits.png)", "### Every method: bg PSNR vs the source",
                   "### Every method: edit PSNR vs the target", "configs/calibration/toy-flux-kontext-v2.json",
                   "- (d) ω = 0.4, grid kernel:", "Not run this time"):
        assert needle in text, needle
    assert text.count("**reproduces**") + text.count("**does not reproduce**") >= 10
    for png in ("drop_ratio.png", "keep_vs_area.png", "edits.png"):
        assert (docs / "toy-results" / png).stat().st_size > 1000


# ------------------------------------------------------------------ the picture grid

def test_grid_image_draws_labels_and_has_the_right_size(tmp_path):
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
    rows = [(f"row {i}\nsecond line", [_png(tmp_path / f"{i}-{j}.png", colors[j], 40) for j in range(4)])
            for i in range(3)]
    rows[1][1][2] = None                                   # a missing edit: a grey cell
    info = picture_grid.grid_image(rows, ["source", "target", "full", "TokenDrop ω=0.4, grid kernel, reg"],
                                   tmp_path / "grid.png", cell=64)
    with Image.open(info["path"]) as im:
        img = np.asarray(im.convert("RGB")).astype(int)
    pad, lw, hdr, rh = picture_grid.PAD, info["label_width"], info["header"], info["row_height"]
    assert info["size"] == [lw + 4 * (64 + pad) + pad, hdr + 3 * rh + pad]
    assert (img.shape[1], img.shape[0]) == tuple(info["size"])
    assert info["missing"] == 1
    for j in range(4):                                     # a title above every column: dark text pixels
        x = lw + j * (64 + pad)
        assert (img[:hdr, x:x + 64].sum(axis=2) < 200).any(), j
        for i in range(3):                                 # the cells: the images, resized
            y = hdr + i * rh
            expected = (200, 200, 200) if (i, j) == (1, 2) else colors[j]
            assert tuple(img[y + 10, x + 10]) == expected
    for i in range(3):                                     # a label left of every row
        y = hdr + i * rh
        assert (img[y:y + rh - pad, :lw - pad].sum(axis=2) < 200).any(), i
    # the long title wraps into the header instead of running over the next column
    assert hdr > 2 * picture_grid.FONT_SIZE
    with pytest.raises(ValueError, match="2 images for 4 columns"):
        picture_grid.grid_image([("r", ["a", "b"])], ["a", "b", "c", "d"], tmp_path / "bad.png")


def test_study_grid_picks_one_record_per_category_and_each_method(tmp_path):
    df = _claims(tmp_path)
    data = _manifest(tmp_path)
    sparse = pd.DataFrame([{"model": "toy-ft-drop", "label": "random, keep 0.25", "record_id": f"{c}-{i}",
                            "status": "ok", "output_uri": _png(tmp_path / "sc" / f"{c}-{i}.png", (1, 2, 3))}
                           for c in CATS for i in range(2)])
    info = picture_grid.study_grid(df, data, tmp_path / "edits.png", sparse)
    assert info["columns"] == ["source", "target (exact)", "full", "random drop 0.50",
                               "TokenDrop ω=0.4, paper kernel, reg", "TokenDrop ω=0.4, grid kernel, reg",
                               "ToPi τ=0.85", "SpotEdit τ=0.2", "Sparse Context random, keep 0.25 (toy-ft-drop)"]
    assert [r.split("\n")[0] for r in info["rows"]] == list(CATS)
    assert info["rows"][0] == "recolor\n“do recolor 0”" and info["missing"] == 0
    assert info["cell"] == 32                              # the records' own size (at most 192)


def test_calibration_is_made_for_the_model_when_missing_and_reused(tmp_path, monkeypatch):
    """The calibration run on the model's own records at its size (2 records, 2 steps here); a second call reuses
    the file; a file made for another model is refused; the shipped v1 file is found by name."""
    import torch

    torch.set_num_threads(1)
    monkeypatch.setattr(toy_calibration, "CALIBRATION_RECORDS", 2)
    path = toy_calibration.ensure_calibration(V1, tmp_path, 2, tmp_path / "cal.json")
    doc = json.loads(path.read_text())
    assert doc["model"] == V1.name and doc["samples"] == 2 and doc["steps"] == 2 and len(doc["layers"]) == 2
    with Image.open(tmp_path / "calibration" / "data" / "source" / "toy-7-000000.png") as im:
        assert im.size == (128, 128)
    stamp = path.stat().st_mtime_ns
    assert toy_calibration.ensure_calibration(V1, tmp_path, 2, path) == path and path.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="not of 'toy-flux-kontext-v2'"):
        toy_calibration.ensure_calibration(V2, tmp_path, 2, path)
    assert toy_calibration.ensure_calibration(V1, tmp_path, 28) == toy_calibration.CALIBRATIONS / "toy-flux-kontext.json"
    # a quick check at other steps does not ship a file: it goes to the working folder
    monkeypatch.setattr(toy_calibration, "CALIBRATIONS", tmp_path / "shipped")
    monkeypatch.setattr(toy_calibration, "PROTOCOL_STEPS", 28)
    made = toy_calibration.ensure_calibration(V1, tmp_path / "w", 2)
    assert made == tmp_path / "w" / "calibration" / "toy-flux-kontext.json" and made.is_file()


def test_command_line_defaults_to_v2_and_passes_the_model_on(monkeypatch):
    import argparse

    from jobs import toy_results

    parser = argparse.ArgumentParser()
    toy_results.add_arguments(parser)
    args = parser.parse_args([])
    assert args.model == "toy-flux-kontext-v2" and args.out is None and args.size is None
    seen = {}
    monkeypatch.setattr(toy_run, "run_study", lambda *a, **kw: seen.update(kw) or {"doc": "x"})
    toy_results.run(parser.parse_args(["--model", "toy-flux-kontext", "--no-sparse-context", "--threads", "2"]))
    assert seen["model"] == "toy-flux-kontext" and seen["sparse_context"] is False and seen["threads"] == 2


def test_sparse_context_grid_may_run_on_the_splits_first_records(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"id": f"r{i}", "image": f"source/r{i}.png", "category": c} for i, c in enumerate(CATS * 3)]
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert sc_run.first_records(data, None) == "manifest.jsonl" and sc_run.first_records(data, 99) == "manifest.jsonl"
    name = sc_run.first_records(data, 4)
    kept = [json.loads(line) for line in (data / name).read_text().splitlines()]
    assert [r["id"] for r in kept] == ["r0", "r1", "r2", "r3"] and kept[0]["image"] == "source/r0.png"
    with pytest.raises(ValueError, match="at least 1"):
        sc_run.first_records(data, 0)
    cfg = toy_config.study_config(sc_run.CONFIG, V2, data, tmp_path / "sparse", 4, manifest=name)
    assert cfg.input.uri == str(data / name)
