"""The cache study (studies.cache.run): Pareto frontier and verdicts on synthetic rows, the resume skip, the
aggregation and the README section. No model runs (the edits are stubbed)."""
from __future__ import annotations

import json
import math

import pytest

from studies.cache import doc
from studies.cache import grid as study_grid
from studies.cache import pareto as cp
from studies.cache import run as study
from costs.ideal_speedup import project


def row(config: str, flop: float, q: float, measured: float | None = None, family: str | None = None) -> dict:
    return {"config": config, "family": family or study_grid.family(config), "flop_speedup": flop,
            "measured_speedup": flop if measured is None else measured, "psnr_target": q, "psnr_full": q}


FULL = row("full|", 1.0, math.inf)
CACHE = row("full|first-block:threshold=0.12", 3.0, 40.0)
CACHE_FAST = row("full|taylorseer:interval=5", 3.5, 35.0)
POLICY = row("tokendrop[omega=0]|", 1.05, 27.0)
COMP = row("tokendrop[omega=0]|first-block:threshold=0.12", 3.2, 26.0)
PEER = row("peer:cache-dit|", 2.4, 38.0)


def test_family_and_parts():
    assert [study_grid.family(c) for c in ("full|", "full|magcache:threshold=0.25", "random[ratio=0.5]|",
                                      "random[ratio=0.5]|magcache:threshold=0.25", "peer:cache-dit|")] == \
        ["full", "cache", "pruning", "cache+pruning", "peer"]
    assert study_grid.parts("random[ratio=0.5]|magcache:threshold=0.25") == ("random[ratio=0.5]|",
                                                                      "full|magcache:threshold=0.25")
    assert study_grid.parts("full|magcache:threshold=0.25") is None


def test_grid_holds_every_composition_s_parts():
    g = study_grid.grid()
    comps = [c for c in g if study_grid.family(c) == "cache+pruning"]
    assert len(comps) >= 3 * 4 and len(set(g)) == len(g)
    assert all(set(study_grid.parts(c)) <= set(g) for c in comps)
    assert {"first-block", "magcache", "taylorseer"} <= {c.partition("|")[2].partition(":")[0] for c in comps}


def test_pareto_frontier_drops_dominated_and_keeps_ties():
    rows = [FULL, CACHE, CACHE_FAST, POLICY, COMP, PEER, row("full|first-block:threshold=0.05", 3.0, 40.0)]
    front = cp.pareto_frontier(rows, "flop_speedup", "psnr_target")
    names = [r["config"] for r in front]
    # POLICY (1.05×, 27) is beaten by CACHE (3×, 40); PEER (2.4×, 38) too; COMP (3.2×, 26) by CACHE_FAST (3.5×, 35)
    assert names == ["full|", "full|first-block:threshold=0.12", "full|first-block:threshold=0.05",
                     "full|taylorseer:interval=5"]
    assert cp.pareto_frontier([{**PEER, "reason": "no CUDA"}], "flop_speedup", "psnr_target") == []


def test_composition_verdict_no_with_margin():
    v = cp.composition_verdict([FULL, CACHE, CACHE_FAST, POLICY, COMP, PEER], "flop_speedup", "psnr_target")
    # the best single at >= 3.2× is CACHE_FAST (35 dB): the composition is 9 dB behind
    assert not v["ok"] and v["single"]["config"] == CACHE_FAST["config"] and v["margin"] == pytest.approx(-9.0)
    text = cp.composition_text([FULL, CACHE, CACHE_FAST, POLICY, COMP, PEER], "flop_speedup", "psnr_target")
    assert "**no**" in text and "9.00 dB behind" in text
    # context: the next single method on the frontier below that speed (CACHE: 3.0×, 40 dB) is better still
    assert v["slower"]["config"] == CACHE["config"] and "just below that speed" in text


def test_composition_verdict_yes_and_uncontested():
    good = {**COMP, "psnr_target": 36.0}
    v = cp.composition_verdict([CACHE, CACHE_FAST, POLICY, good], "flop_speedup", "psnr_target")
    assert v["ok"] and v["margin"] == pytest.approx(1.0)
    # faster than every single method: compared with the fastest ones, so worse quality does not win
    fastest = {**COMP, "flop_speedup": 5.0, "psnr_target": 10.0}
    v = cp.composition_verdict([CACHE, CACHE_FAST, POLICY, fastest], "flop_speedup", "psnr_target")
    assert not v["ok"] and v["single"]["config"] == CACHE_FAST["config"] and v["margin"] == pytest.approx(-25.0)
    v = cp.composition_verdict([CACHE, CACHE_FAST, POLICY, {**fastest, "psnr_target": 36.0}], "flop_speedup",
                               "psnr_target")
    assert v["ok"] and v["margin"] == pytest.approx(1.0)
    v = cp.composition_verdict([POLICY, {**fastest, "psnr_target": 30.0}], "flop_speedup", "psnr_target")
    assert v["ok"] and v["single"]["config"] == POLICY["config"] and v["margin"] == pytest.approx(3.0)


def test_composition_verdict_shortfall():
    slow = {**COMP, "flop_speedup": 2.1}
    v = cp.composition_verdict([CACHE, POLICY, slow], "flop_speedup", "psnr_target", target=2.5)
    assert not v["ok"] and v["shortfall"] == pytest.approx(0.4)
    assert "0.40× short" in cp.composition_text([CACHE, POLICY, slow], "flop_speedup", "psnr_target")


def test_composes_against_its_parts():
    parts = {COMP["config"]: study_grid.parts(COMP["config"])}
    res = cp.composes([CACHE, POLICY, COMP], parts, "flop_speedup", "psnr_target")
    assert len(res) == 1 and res[0]["composes"]          # faster than both, neither part as fast
    assert res[0]["speed_gain"] == pytest.approx(3.2 / 3.0)
    assert res[0]["vs_better"] == pytest.approx(-14.0) and res[0]["vs_worse"] == pytest.approx(-1.0)
    slower = {**COMP, "flop_speedup": 2.9}                 # CACHE is faster and better: dominated
    assert not cp.composes([CACHE, POLICY, slower], parts, "flop_speedup", "psnr_target")[0]["composes"]
    assert cp.composes([CACHE, slower], parts, "flop_speedup", "psnr_target") == []   # a part missing
    assert "0 of 1" in cp.composes_text([CACHE, POLICY, slower], parts, "flop_speedup", "psnr_target")


def test_peer_vs_ours_at_matched_speed():
    res = cp.peer_vs_ours([CACHE, CACHE_FAST, PEER], "flop_speedup", "psnr_full")
    assert res[0]["ours"]["config"] == CACHE["config"] and res[0]["margin"] == pytest.approx(2.0)
    fast_peer = {**PEER, "flop_speedup": 9.0}
    assert cp.peer_vs_ours([CACHE, fast_peer], "flop_speedup", "psnr_full")[0]["ours"] is None
    assert "ours 2.0 dB better" in cp.peer_text([CACHE, CACHE_FAST, PEER], "flop_speedup", "psnr_full")


def fake_line(config: str, record: str, mse_full: float = 1e-4) -> dict:
    return {"model": "toy", "steps": 4, "config": config, "record": record, "mse_full": mse_full,
            "mse_target": 1e-2, "mse_bg": None if record == "b" else 1e-3, "skipped": 2, "keep": 1.0, "query": 1.0,
            "flop_speedup": 2.0, "measured_speedup": 1.5, "cpu_speedup": 1.6, "seconds": 1.0,
            "reference_seconds": 1.5}


def test_resume_skips_finished_configurations(tmp_path, monkeypatch):
    path = tmp_path / "rows.jsonl"
    study_grid.append_rows(path, [fake_line("full|", "a"), fake_line("full|", "b")])
    study_grid.append_rows(path, [fake_line("random[ratio=0.5]|", "a")])          # one record of two: not finished
    with path.open("a") as f:
        f.write('{"torn')                                                  # an interrupted write
    rows = study_grid.read_rows(path)
    assert len(rows) == 3
    assert study_grid.finished(rows, "toy", 4, ["a", "b"]) == {"full|"}
    assert study_grid.finished(rows, "toy", 8, ["a", "b"]) == set()             # other steps: nothing finished
    assert study_grid.pending(["full|", "random[ratio=0.5]|", "peer:regione|"], rows, "toy", 4, ["a", "b"]) == \
        ["random[ratio=0.5]|"] + (["peer:regione|"] if study_grid.unavailable("peer:regione|") is None else [])


def test_run_measures_only_what_is_pending(tmp_path, monkeypatch):
    import actors

    calls = []
    monkeypatch.setattr(actors, "load_pipeline", lambda *a, **k: object())
    monkeypatch.setattr(study, "Record", lambda spec: type("R", (), {"id": spec["id"], "spec": spec})())
    monkeypatch.setattr(study, "measure", lambda pipe, config, rec, steps, config_first=False:
                        calls.append((config, rec.id)) or fake_line(config, rec.id))
    configs = ["full|", "tokendrop[omega=0]|"]
    demo = [json.loads(line)["id"] for line in (study.CONFIGS / "demo_manifest.jsonl").read_text().splitlines()
            if line.strip()][:2]   # the run's first two records
    study_grid.append_rows(tmp_path / "rows.jsonl", [fake_line("full|", r) for r in demo])
    ran = study.run(tmp_path, "toy", 4, records=2, configs=configs, log=lambda m: None)
    assert ran == ["tokendrop[omega=0]|"] and [c for c, _ in calls] == ["tokendrop[omega=0]|"] * 2
    monkeypatch.setattr(actors, "load_pipeline", lambda *a, **k: pytest.fail("nothing to run: no model load"))
    assert study.run(tmp_path, "toy", 4, records=2, configs=configs, log=lambda m: None) == []
    assert len(study_grid.read_rows(tmp_path / "rows.jsonl")) == 4


def test_aggregate_psnr_of_mean_error_and_unavailable_peer(monkeypatch):
    monkeypatch.setattr(study_grid, "unavailable", lambda c: "no CUDA here" if c == "peer:regione|" else None)
    lines = [fake_line("full|", "a", 0.0), fake_line("full|", "b", 0.0),
             fake_line("full|magcache:threshold=0.25", "a", 1e-4), fake_line("full|magcache:threshold=0.25", "b", 3e-4)]
    rows = doc.aggregate(lines, "toy", 4, ["full|", "full|magcache:threshold=0.25", "peer:regione|"])
    assert [r["config"] for r in rows] == ["full|", "full|magcache:threshold=0.25", "peer:regione|"]
    assert rows[0]["psnr_full"] == math.inf
    assert rows[1]["psnr_full"] == pytest.approx(10 * math.log10(1 / 2e-4))
    assert rows[1]["bg_records"] == 1 and rows[1]["psnr_bg"] == pytest.approx(30.0)
    assert rows[2]["reason"] == "no CUDA here"
    md = doc.table(rows, 4)
    assert "identical" in md and "unavailable: no CUDA here" in md
    assert "Mag 0.25" == doc.short("full|magcache:threshold=0.25")
    assert doc.short("tokendrop[omega=0]|first-block:threshold=0.12") == "TD 0+FB 0.12"
    assert doc.short("peer:cache-dit[taylorseer=true]|") == "cache-dit+TS" and doc.short("full|") == "full"


def test_readme_section_replaced_between_markers_only():
    text = f"# A\nkeep me\n{doc.BEGIN}\nold\n{doc.END}\n## B\nkeep me too\n"
    new = doc.replace_section(text, "## Temporal caches\nnew")
    assert new == f"# A\nkeep me\n{doc.BEGIN}\n## Temporal caches\nnew\n{doc.END}\n## B\nkeep me too\n"
    assert doc.replace_section("# no markers\n", "x") is None
    json.dumps(new)


def test_matched_speed_tolerance_denies_an_uncontested_win():
    # 3% faster than CACHE_FAST but 25 dB worse: compared with CACHE_FAST (within 5 %), not "uncontested"
    barely = {**COMP, "flop_speedup": 3.6, "psnr_target": 10.0}
    v = cp.composition_verdict([CACHE, CACHE_FAST, POLICY, barely], "flop_speedup", "psnr_target")
    assert not v["ok"] and v["single"]["config"] == CACHE_FAST["config"] and v["margin"] == pytest.approx(-25.0)
    v = cp.composition_verdict([CACHE, barely], "flop_speedup", "psnr_target", tolerance=0.0)
    assert not v["ok"] and v["single"]["config"] == CACHE["config"]


def test_composes_text_groups_by_policy():
    other = row("random[ratio=0.5]|first-block:threshold=0.12", 2.0, 20.0)
    rows = [CACHE, POLICY, COMP, other, row("random[ratio=0.5]|", 1.05, 24.0)]
    parts = {c["config"]: study_grid.parts(c["config"]) for c in (COMP, other)}
    text = cp.composes_text(rows, parts, "flop_speedup", "psnr_target")
    assert "1 of 2" in text and "`tokendrop[omega=0]` 1/1" in text and "`random[ratio=0.5]` 0/1" in text


def test_projection_to_1024_keeps_shares_and_prices_pruning_higher():
    from types import SimpleNamespace

    import costs
    from costs import flops

    toy = [SimpleNamespace(noisy=64, total=64, kept=32, active=None, keys=None, from_layer=0, cache_calls=())] * 4
    big = project(toy, 4096)
    assert big[0].noisy == 4096 and big[0].total == 4096 and big[0].kept == 2048 and big[0].active is None
    arch, text = costs.real("FLUX.1-Kontext-dev").arch, costs.real("FLUX.1-Kontext-dev").text()
    # at 64 + 64 image tokens the 512 text tokens dominate: half the source buys far less than at 4096 + 4096
    assert flops.predicted_speedup(arch, big, text) > flops.predicted_speedup(arch, toy, text) + 0.1


def test_a_measured_row_carries_the_roofline_beside_the_flop_ideal_speedup():
    import actors

    pipe = actors.load_pipeline("tiny-flux-kontext", device="cpu")
    spec = json.loads((study.CONFIGS / "demo_manifest.jsonl").read_text().splitlines()[0])
    row = study.measure(pipe, "random[ratio=0.5]|", study.Record(spec), 3)
    assert 1.0 < row["roofline_1024"] <= row["flop_1024"] + 1e-9
    table = doc.table(doc.aggregate([{**row, "model": "tiny", "steps": 3}], "tiny", 3), 3)
    assert "roofline H100" in table and f"{row['roofline_1024']:.2f}×" in table
