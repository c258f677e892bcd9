"""TokenDrop's matched-budget baseline in the pipeline: a `random` configuration with `budget_from` keeps, per
record and step, exactly the source tokens its reference configuration kept on that record."""
import json

import pytest

from jobs import preflight
from pipeline.config import ConfigError, expand_grid, expand_run, parse_config
from pipeline.graph import run_ablation
from pipeline.units import run_order
from pipeline.resume import latest_rows, read_results

TOKENDROP = {"name": "tokendrop", "omega": 0.0, "full_steps": 1}
REFERENCE = "tokendrop omega=0.0 full_steps=1"


def _config(tmp_path, policies, **extra):
    raw = {"input": "configs/demo_manifest.jsonl", "output": str(tmp_path / "out"),
           "models": [{"name": "tiny-flux-kontext"}], "policies": policies, "resolutions": [64], "steps": 3,
           "actors": {"num_gpus": 0, "num_cpus": 1, "min_size": 1, "max_size": 1, "batch_size": 1},
           "metrics": {"compute": ["background"]}}
    raw.update(extra)
    return parse_config(raw)


def test_budget_from_names_a_configuration_of_the_same_group(tmp_path):
    cfg = _config(tmp_path, [TOKENDROP, {"name": "random", "budget_from": REFERENCE}])
    configs = expand_grid(cfg)
    by_label = {c.label: c for c in configs}
    random = by_label[f"random budget_from={REFERENCE}"]
    assert random.budget_source == by_label[REFERENCE].config_id
    reordered = expand_grid(_config(tmp_path, [TOKENDROP, {"name": "random", "budget_from": "tokendrop full_steps=1 omega=0.0"}]))
    assert [c.budget_source for c in reordered if c.budget_source] == [random.budget_source]
    for record in ("a", "b", "c"):   # whatever the rotation, it runs after its source
        assert run_order(configs, record)[-1].label == random.label
    preflight.check_policies(configs)
    with pytest.raises(ConfigError, match="names no configuration; accepted: .*tokendrop omega=0.0"):
        expand_grid(_config(tmp_path, [TOKENDROP, {"name": "random", "budget_from": "tokendrop omega=9"}]))
    with pytest.raises(ValueError, match="takes no per-step budget"):
        preflight.check_policies(expand_grid(_config(tmp_path, [TOKENDROP, {"name": "tokendrop", "omega": 0.4,
                                                                            "budget_from": REFERENCE}])))


def test_matched_random_rows_keep_their_reference_counts(ray_session, tmp_path):
    cfg = _config(tmp_path, [TOKENDROP, {"name": "random", "budget_from": REFERENCE}])
    run_ablation(expand_run(cfg))
    rows = latest_rows(read_results(str(tmp_path / "out" / "results"))).to_pandas()
    assert (rows["status"] == "ok").all() and len(rows) == 2 * 5
    counts = {(r.label, r.record_id): list(r.kept_per_step) for r in rows.itertuples()}
    for record in rows["record_id"].unique():
        reference = counts[(REFERENCE, record)]
        assert counts[(f"random budget_from={REFERENCE}", record)] == reference
        assert min(reference) < max(reference)   # TokenDrop dropped something: the match is not trivial
    applied = json.loads(rows[rows["policy"] == "random"]["policy_applied"].iloc[0])
    assert len(applied["budget"]) == 3
