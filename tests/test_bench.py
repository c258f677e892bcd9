"""`dropedit bench` on a very small setting: JSON and Markdown with the expected keys; policy parsing and
skipping. Timings are never asserted (the machine is shared)."""
import json

import pytest

import policies
from jobs import bench, cli
from jobs.bench_speed import default_policies, parse_policy

TINY = ["--sizes", "32,48", "--steps", "3", "--reps", "2", "--layers", "1", "--single-layers", "1"]


def test_policy_variants_parse_with_lists_and_yaml_values():
    spec = parse_policy("random:ratio=0.75,budget=[1,2,3],reg=true")
    assert spec.name == "random" and spec.params == {"ratio": 0.75, "budget": [1, 2, 3], "reg": True}
    assert spec.label == "random:ratio=0.75,budget=[1, 2, 3],reg=True"
    assert parse_policy("full").params == {}
    with pytest.raises(ValueError):
        parse_policy(":ratio=1")


def test_every_registered_policy_is_benchmarked_by_default():
    assert [s.name for s in default_policies(policies.REGISTRY)] == list(policies.REGISTRY)


def test_bench_writes_json_and_markdown(tmp_path, ray_session):
    out = tmp_path / "bench"
    code = cli.main(["bench", *TINY, "--policy", "random:ratio=0.5", "--policy", "random:ratio=2",
                     "--policy", "tokendrop", "--out", str(out), "--pipeline-records", "3",
                     "--pipeline-size", "32", "--pipeline-steps", "1"])
    assert code == 0
    result = json.loads((out / "bench.json").read_text())
    assert {"machine", "settings", "bench_arch", "rows", "skipped", "edits", "pipeline", "real_architectures"} \
        <= result.keys()
    assert {"cpu", "cores", "torch", "diffusers", "device", "load_start", "load_end"} <= result["machine"].keys()
    assert set(result["real_architectures"]) == {"FLUX.1-Kontext-dev", "Qwen-Image-Edit"}
    # full is added as the A side; a variant that cannot be built is reported with its reason
    assert "ratio" in result["skipped"]["random:ratio=2"]
    rows = {(r["size"], r["policy"]): r for r in result["rows"]}
    assert set(rows) == {(s, p) for s in (32, 48) for p in ("full", "random:ratio=0.5", "tokendrop")}
    for (size, policy), row in rows.items():
        assert {"keep_ratio", "loop_s", "edit_s", "speedup_loop", "speedup_edit", "predicted_bench", "efficiency",
                "speedup_loop_cpu", "efficiency_cpu", "loop_cpu_s",
                "policy_overhead_share_loop", "predicted_real"} <= row.keys()
        assert row["reps"] == 2 and row["speedup_loop"]["n"] == 2
        assert row["noisy_tokens"] == (size // 16) ** 2 and row["text_tokens"] == [512]
        if policy == "full":
            assert row["predicted_bench"] == 1.0 and row["speedup_loop"]["median"] == 1.0
    assert rows[(32, "random:ratio=0.5")]["keep_ratio"] == 0.5
    assert rows[(32, "random:ratio=0.5")]["predicted_bench"] > 1.0
    pipe = result["pipeline"]
    assert pipe["bare"]["edits"] == 3 and pipe["ray"]["ok"] == 3 and pipe["ray"]["errors"] == []
    assert {"end_to_end", "steady"} <= pipe["ratio"].keys()
    md = (out / "bench.md").read_text()
    for heading in ("## Measured on the benchmark model", "## The same traces priced on the real architectures",
                    "## Pipeline overhead", "## Machine"):
        assert heading in md
    assert "| 48² | random:ratio=0.5 |" in md and "random:ratio=2" in md


def test_policy_that_fails_on_the_model_is_skipped_with_its_reason(tmp_path):
    # ToPi's defaults exempt 10 layers: a 2-layer model has none left to prune
    if "topi" not in policies.REGISTRY:
        pytest.skip("ToPi is not registered")
    out = tmp_path / "bench"
    code = cli.main(["bench", "--sizes", "32", "--steps", "2", "--reps", "1", "--layers", "1",
                     "--single-layers", "1", "--policy", "topi", "--no-pipeline", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "bench.json").read_text())
    assert "exempt_layers" in result["skipped"]["topi"]
    assert "`topi`" in (out / "bench.md").read_text()


def test_bad_settings_exit_with_a_message(tmp_path, capsys):
    assert cli.main(["bench", "--sizes", "100", "--out", str(tmp_path)]) == 2
    assert "multiples of 16" in capsys.readouterr().err
    assert bench._sizes("1024, 2048") == [1024, 2048]


def test_cluster_entrypoint_measures_inside_a_ray_task(tmp_path, ray_session):
    """`python -m jobs.bench` (the `ray job submit` entrypoint) runs the measurement as a Ray task."""
    out = tmp_path / "bench"
    assert bench.main(["--sizes", "32", "--steps", "2", "--reps", "1", "--layers", "1", "--single-layers", "0",
                       "--policy", "random", "--no-pipeline", "--out", str(out)]) == 0
    result = json.loads((out / "bench.json").read_text())
    assert [r["policy"] for r in result["rows"]] == ["full", "random"]
    assert result["bench_arch"]["single_layers"] == 0 and result["pipeline"] is None
