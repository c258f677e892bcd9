"""The typed run: configurations are frozen, cross Ray as plain rows, and `dropedit run` expands the grid once
for preflight, the dry run and the graph."""
import dataclasses

import pytest

import pipeline.config
from jobs import ablate
from pipeline.config import expand_run, parse_config
from pipeline.configuration import Configuration, ExpandedRun

RAW = {"input": "configs/demo_manifest.jsonl", "output": "results", "models": [{"name": "tiny-flux-kontext"}],
       "policies": ["full", {"name": "tokendrop", "omega": [0.0, 0.4]}], "resolutions": [64], "seeds": [0, 1],
       "steps": 2, "caches": ["none", {"name": "first-block", "threshold": 0.1}]}


def test_configurations_are_frozen_and_round_trip_through_rows():
    run = expand_run(parse_config(RAW))
    assert isinstance(run, ExpandedRun) and len(run.configurations) == 2 * 3 * 2
    conf = run.configurations[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        conf.steps = 3
    for c in run.configurations:
        row = c.to_row()
        assert isinstance(row, dict) and Configuration.from_row(row) == c
    cached = next(c for c in run.configurations if c.cache is not None)
    assert cached.to_row()["cache"] == {"name": "first-block", "threshold": 0.1}
    assert conf.is_reference and not cached.is_reference and cached.full_config_id == conf.config_id
    assert run.model_keys() == ["tiny-flux-kontext"] and run.of_model("tiny-flux-kontext") == run.configurations


def _count_expansions(monkeypatch) -> list[int]:
    calls = []
    real = pipeline.config.expand_grid

    def counting(cfg):
        calls.append(1)
        return real(cfg)

    monkeypatch.setattr(pipeline.config, "expand_grid", counting)
    return calls


def test_a_dry_run_expands_the_grid_once(monkeypatch, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("input: configs/demo_manifest.jsonl\noutput: results\nmodels: [{name: tiny-flux-kontext}]\n"
                    "policies: [full, {name: tokendrop, omega: [0.0, 0.4]}]\nresolutions: [64]\nsteps: 2\n")
    calls = _count_expansions(monkeypatch)
    assert ablate.main([str(path), "--dry-run", "--records", "4"]) == 0
    assert "edits: 12 (3 per record)" in capsys.readouterr().out
    assert len(calls) == 1   # before the typed run: 2 (preflight, then the dry run's own expansion)


def test_a_run_expands_the_grid_once_and_hands_the_graph_the_same_run(monkeypatch, tmp_path):
    import pipeline.graph
    import pipeline.ray_session

    path = tmp_path / "run.yaml"
    path.write_text(f"input: configs/demo_manifest.jsonl\noutput: {tmp_path / 'out'}\n"
                    "models: [{name: tiny-flux-kontext}]\npolicies: [full]\nresolutions: [64]\nsteps: 2\n")
    calls, handed = _count_expansions(monkeypatch), []
    monkeypatch.setattr(pipeline.ray_session, "init_ray", lambda *a, **k: None)
    monkeypatch.setattr(pipeline.graph, "run_ablation", lambda run: handed.append(run) or {"results": "r"})
    assert ablate.main([str(path), "--no-report"]) == 0
    assert len(calls) == 1   # before: 2 (preflight, then run_ablation's own expansion)
    assert isinstance(handed[0], ExpandedRun) and [c.policy for c in handed[0].configurations] == ["full"]
