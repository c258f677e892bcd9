"""`dropedit report` on a results folder built by hand: no model, no Ray."""
from datetime import datetime, timedelta, timezone

import PIL.Image
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.storage import safe_name
from report import grid as report_grid
from metrics.base import status_reason
from metrics.lpips import lpips_reason
from report.plots import keep_ratio_figure, speedup_figure
from report.speed import trust_problems
from report.tables import _with_labels, load_results, summary_table, write_report
from pipeline.records import base_row, rows_to_table

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
LPIPS_WHY = "unavailable: no alex backbone weights (looked for /nowhere/alex.pth)"
CLIP_WHY = "unavailable: no metrics.clip_model given"
COLOURS = {"full": (250, 0, 0), "a": (0, 250, 0), "b": (0, 0, 250)}


def _png(path, colour, size=(64, 64), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.new(mode, size, colour).save(path)


def _config(cid, policy, params):
    return {"config_id": cid, "model": "tiny", "policy": policy, "policy_params": params,
            "height": 64, "width": 64, "seed": 0, "steps": 4, "guidance_scale": None}


def make_results(tmp_path, loop_s, labels=None, inputs=True, error=None, devices=None):
    """A results folder like `dropedit run` writes. `loop_s`: {config_id: [seconds per record]} for configs
    full / a (tokendrop omega=0.4) / b (tokendrop omega=0.93); record r2 has no mask (psnr_bg n/a)."""
    out = tmp_path / "out"
    configs = {"full": _config("full", "full", {}), "a": _config("a", "tokendrop", {"omega": 0.4}),
               "b": _config("b", "tokendrop", {"omega": 0.93, "full_steps": 1})}
    n = len(loop_s["full"])
    records = [{"id": f"r{i}", "instruction": f"make the ball number {i} purple and a little larger"}
               for i in range(n)]
    rows = []
    for r, rec in enumerate(records):
        if inputs:
            _png(out / "inputs" / f"{safe_name(rec['id'])}.png", (120, 120, 120))
            if r != 2:
                _png(out / "inputs" / f"{safe_name(rec['id'])}_mask.png", 255, mode="L")
            if r == 0:
                _png(out / "inputs" / f"{safe_name(rec['id'])}_target.png", (0, 200, 200))
        for k, (cid, conf) in enumerate(configs.items()):
            row = base_row(rec, conf, "run1")
            uri = out / "images" / cid / f"{rec['id']}.png"
            _png(uri, COLOURS[cid])
            _png(out / "masks" / cid / f"{rec['id']}.png", (0, 128, 0))
            keep = {"full": 1.0, "a": 0.6, "b": 0.07}[cid]
            row.update(output_uri=str(uri), status="ok", runtime_s=loop_s[cid][r] + 1, loop_s=loop_s[cid][r],
                       keep_ratio_mean=keep, keep_ratio_per_step=[1.0] + [keep] * 3,
                       psnr_bg=None if r == 2 else 30.0 - 5 * k, lpips_status=LPIPS_WHY,
                       clip_status=CLIP_WHY, structure_distance=0.01 * k, structure_status="ok",
                       psnr_vs_full=None if cid == "full" else 25.0,
                       device=(devices or {}).get(cid, "cpu"), started_at=T0 + timedelta(seconds=10 * r + k),
                       finished_at=T0 + timedelta(seconds=10 * r + k + 1))
            if error and (cid, rec["id"]) == error:
                row.update(status="error", error="CUDA out of memory", output_uri=None, psnr_bg=None)
            row["label"] = (labels or {}).get(cid)                 # None: the report names it itself
            rows.append(row)
    table = rows_to_table(rows)
    (out / "results").mkdir(parents=True)
    pq.write_table(table, out / "results" / "part-0.parquet")
    return str(out / "results")


FULL = [12.0, 12.0, 12.0]
TIMES = {"full": FULL, "a": [6.0, 4.0, 3.0], "b": [12.0, 6.0, 8.0]}   # a: ratios 2, 3, 4


def _row(table, policy, needle):
    rows = table[(table["policy"] == policy) & table["policy_params"].str.contains(needle)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_paired_speedups_are_median_iqr_and_count_of_per_record_ratios(tmp_path):
    table = summary_table(load_results(make_results(tmp_path, TIMES)))
    a = _row(table, "tokendrop", '"omega":0.4')
    assert (a["speedup_median"], a["speedup_p25"], a["speedup_p75"], a["speedup_n"]) == (3.0, 2.5, 3.5, 3)
    b = _row(table, "tokendrop", '"omega":0.93')
    assert b["speedup_median"] == 1.5 and b["speedup_n"] == 3     # ratios 1, 2, 1.5
    full = _row(table, "full", "{}")
    assert full["speedup_median"] == 1.0 and full["label"] == "full"
    assert list(table["label"]) == ["full", "tokendrop full_steps=1, omega=0.93", "tokendrop omega=0.4"]


def test_speedup_warning_for_few_records_and_none_for_a_steady_one(tmp_path):
    md = open(write_report(make_results(tmp_path, TIMES), str(tmp_path / "rep"))["markdown"]).read()
    assert "WARNING: the speedup of tokendrop omega=0.4 (3.00x) cannot be trusted: only 3 paired records" in md
    assert "back to back on one actor" in md and "dropedit bench" in md and "CPUs and load average" in md
    steady = {"full": [12.0] * 6, "a": [6.0] * 6, "b": [6.0, 4.0, 6.0, 4.0, 6.0, 4.0]}
    md = open(write_report(make_results(tmp_path / "steady", steady), str(tmp_path / "rep2"))["markdown"]).read()
    assert "speedup of tokendrop omega=0.4 " not in md                  # 6 pairs, all 2.0: nothing to warn
    assert "speedup of tokendrop full_steps=1, omega=0.93 (2.50x) cannot be trusted: p25-p75 spread" in md


def test_speedup_warning_when_pairs_ran_on_different_devices(tmp_path):
    steady = {"full": [12.0] * 6, "a": [6.0] * 6, "b": [6.0] * 6}
    results = make_results(tmp_path, steady, devices={"full": "cuda:0", "a": "cuda:1", "b": "cuda:0"})
    md = open(write_report(results, str(tmp_path / "rep"))["markdown"]).read()
    assert "speedup of tokendrop omega=0.4 (2.00x) cannot be trusted: pairs ran on different devices" in md
    assert "speedup of tokendrop full_steps=1" not in md


def test_trust_problems_names_each_reason():
    row = pd.Series({"speedup_n": 8, "speedup_median": 2.0, "speedup_p25": 1.9, "speedup_p75": 2.1,
                     "devices_differ": False, "max_gap_s": 10.0})
    assert trust_problems(row) == []
    assert trust_problems(row.replace({10.0: 3600.0})) == ["pairs started up to 60 min apart"]
    assert trust_problems(pd.concat([row.drop("speedup_n"), pd.Series({"speedup_n": 4})]))[0].startswith("only 4")


def test_missing_metrics_get_a_sentence_with_their_reason_and_no_number(tmp_path):
    md = open(write_report(make_results(tmp_path, TIMES), str(tmp_path / "rep"))["markdown"]).read()
    table, notes = md.split("## Metrics not computed", 1)
    assert "nan" not in table and "n/a" in table
    assert f"- `lpips_bg`: n/a for every configuration (2 of 3 edits each). Why: LPIPS {LPIPS_WHY}." in notes
    assert "`lpips_vs_full`: n/a for tokendrop full_steps=1, omega=0.93 (3 of 3 edits); tokendrop omega=0.4 " \
           f"(3 of 3 edits). Why: LPIPS {LPIPS_WHY}." in notes
    assert "`psnr_vs_full`, `ssim_vs_full`, `lpips_vs_full`: n/a for full (3 of 3 edits). " \
           "Why: full is the reference." in notes
    assert "- `psnr_bg`, `lpips_bg`: n/a for every configuration (1 of 3 edits each). Why: no background to score: the record has no ground-truth mask" \
        in notes                                                          # r2 has no mask
    assert "`ssim_bg`, `mse_bg`: n/a for every configuration" in notes   # never written by this fake run
    assert f"- `clip_whole`, `clip_edited`: n/a for every configuration. Why: CLIP {CLIP_WHY}." \
        in notes
    assert "structure_distance" in table and "`structure_distance`" not in notes   # it has its numbers


def test_status_reason_names_the_metric_it_concerns():
    assert status_reason("ok; clip_edited: no ground-truth mask", "clip_edited", "clip_status") == \
        "no ground-truth mask"
    assert status_reason(CLIP_WHY, "clip_whole", "clip_status") == CLIP_WHY
    assert "no clip_status" in status_reason(None, "clip_whole", "clip_status")


def test_plots_have_one_labelled_style_per_configuration(tmp_path):
    df = _with_labels(load_results(make_results(tmp_path, TIMES)))
    table = summary_table(df)
    order = list(table["label"])
    ax = speedup_figure(table, order).axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert order == ["full", "tokendrop full_steps=1, omega=0.93", "tokendrop omega=0.4"]
    assert texts == [f"{label} (n=3 pairs)" for label in order]
    points = [c.lines[0] for c in ax.containers]                 # one errorbar per configuration
    assert [c.get_label() for c in ax.containers] == texts
    assert len({(str(p.get_color()), p.get_marker()) for p in points}) == 3
    assert "speedup" in ax.get_xlabel() and "(dB)" in ax.get_ylabel()
    ax = keep_ratio_figure(df, order, "table_label").axes[0]
    assert [line.get_label() for line in ax.get_lines()] == [f"{label} (n=3 edits)" for label in order]
    assert len({line.get_color() for line in ax.get_lines()}) == 3 and ax.get_legend() is not None


def _tile(sheet, row, col):
    """Top-left pixel inside tile (row, col) of a grid."""
    x = col * report_grid.COL_W + report_grid.PAD + 2
    y = report_grid.TITLE_H + report_grid.HEADER_H + row * report_grid.ROW_H + report_grid.INSTR_H + 2
    return sheet.getpixel((x, y))


def test_grid_has_a_row_per_record_and_inputs_then_configurations(tmp_path):
    results = make_results(tmp_path, TIMES, error=("b", "r1"))
    files = write_report(results, str(tmp_path / "rep"), sheet_records=3)
    sheet = PIL.Image.open(files["contact_sheet"]).convert("RGB")
    assert sheet.size == report_grid.grid_size(3 + 3, 3)        # source, mask, target + 3 configurations
    assert _tile(sheet, 0, 0) == (120, 120, 120) and _tile(sheet, 0, 1) == (255, 255, 255)
    assert _tile(sheet, 0, 2) == (0, 200, 200)                  # r0's target
    assert _tile(sheet, 1, 2) == report_grid.GREY               # r1 has none
    assert _tile(sheet, 2, 1) == report_grid.GREY               # r2 has no mask
    assert [_tile(sheet, 0, c) for c in (3, 4, 5)] == [COLOURS["full"], COLOURS["b"], COLOURS["a"]]
    assert _tile(sheet, 1, 4) == report_grid.GREY and _tile(sheet, 1, 5) == COLOURS["a"]   # b failed on r1
    masks = PIL.Image.open(files["masks"]).convert("RGB")
    assert masks.size == report_grid.grid_size(2 + 3, 3)       # keep masks: no target column
    assert _tile(masks, 0, 2) == (0, 128, 0) and _tile(masks, 1, 3) == report_grid.GREY


def test_grid_without_inputs_or_targets_still_renders(tmp_path):
    results = make_results(tmp_path, TIMES, inputs=False)
    (tmp_path / "out" / "images" / "a" / "r0.png").write_bytes(b"not a png")
    files = write_report(results, str(tmp_path / "rep"), sheet_records=2)
    sheet = PIL.Image.open(files["contact_sheet"]).convert("RGB")
    assert sheet.size == report_grid.grid_size(2 + 3, 2)        # no target column when no record has one
    assert _tile(sheet, 0, 0) == report_grid.GREY and _tile(sheet, 1, 4) == COLOURS["a"]
    assert _tile(sheet, 0, 4) == report_grid.GREY                # unreadable output: a grey tile, no crash


def test_label_column_names_the_configurations(tmp_path):
    labels = {"full": "full", "a": "tokendrop ω=0.4", "b": "tokendrop ω=0.93"}
    table = summary_table(load_results(make_results(tmp_path, TIMES, labels=labels)))
    assert list(table["label"]) == ["full", "tokendrop ω=0.4", "tokendrop ω=0.93"]


def test_lpips_reason_picks_the_part_for_its_metric():
    status = "bg: unavailable: no weights; vs_full: no full output at /x/full/r0.png"
    assert lpips_reason(status, "lpips_bg") == "unavailable: no weights"
    assert lpips_reason(status, "lpips_vs_full") == "no full output at /x/full/r0.png"
    assert lpips_reason("not computed: lpips not in metrics.compute", "lpips_bg") == \
        "not computed: lpips not in metrics.compute"


@pytest.mark.parametrize("text,lines", [("short", 1), ("a " * 200, 2)])
def test_wrap_keeps_to_width_and_line_count(text, lines):
    fnt = report_grid.font(12)
    out = report_grid.wrap(text, fnt, 150, 2)
    assert len(out) == lines and all(fnt.getlength(line) <= 150 for line in out)
    assert out[-1].endswith("…") == (lines == 2)


def test_outputs_identical_to_full_leave_the_psnr_mean_finite_and_are_counted(tmp_path):
    results = make_results(tmp_path, TIMES)
    df = load_results(results)
    first_a = df.index[(df["config_id"] == "a") & (df["record_id"] == "r0")][0]
    df.loc[first_a, "psnr_vs_full"] = float("inf")   # policy a kept every token on r0: equals full exactly
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), f"{results}/part-0.parquet")
    table = summary_table(_with_labels(load_results(results)))
    assert _row(table, "tokendrop", "0.4")["psnr_vs_full"] == pytest.approx(25.0)   # finite: over r1, r2
    md = open(write_report(results, str(tmp_path / "rep"))["markdown"]).read()
    assert "1 of 3 edits are identical to the reference (PSNR = ∞)" in md


def test_whole_image_mask_is_named_as_a_reason():
    from report.notes import row_reason

    reason = row_reason(pd.Series({"policy": "full", "psnr_bg": float("nan")}), "psnr_bg")
    assert "covers the whole image" in reason
