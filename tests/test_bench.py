"""`dropedit bench` on a very small setting: JSON and Markdown with the expected keys; policy parsing and
skipping. Timings are never asserted (the machine is shared)."""
import json

import pytest

import policies
from jobs import bench, cli
from bench.speed import default_policies, parse_policy

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


def test_default_run_times_spotedit_and_topi_while_they_skip():
    """No --policy: every registered policy as it decides, ToPi deciding on a shallow model, and every
    mechanism forced (SpotEdit's partial steps with and without its selector, ToPi's Mode B with anchors)."""
    from bench.forced import make
    from bench.speed import policy_specs

    specs = policy_specs([], policies.REGISTRY)
    names = [s.name for s in specs]
    assert names[: len(policies.REGISTRY)] == list(policies.REGISTRY)
    assert {"forced-gather", "forced-topi", "forced-spotedit"} <= set(names)
    assert any(s.name == "topi" and s.params.get("exempt_layers") == 1 for s in specs)
    for spec in specs:   # every default variant builds
        make(spec.name, **spec.params)


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


def test_bench_with_several_references_on_edit_plus(tmp_path):
    """`--references 1,2` on Qwen-Image-Edit-Plus: a row per (reference count, policy), each A/B against
    `full` with the same references; traces, text lengths and the real-architecture pricing follow the count."""
    import math

    from actors.families.qwen_image_edit.architecture import edit_plus_text_tokens
    from actors.tiny_models import build_tiny_qwen_vl_processor
    from bench.speed import bench_image
    from costs.flops import image_tokens
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import CONDITION_IMAGE_SIZE

    out = tmp_path / "bench"
    policies_ = ["sparse_context:strategy=random,keep=0.25,warmup_steps=1",
                 "sparse_context:strategy=residual,keep=0.1,warmup_steps=1"]
    code = cli.main(["bench", "--model", "qwen-plus", "--references", "1,2", "--sizes", "32", "--steps", "2",
                     "--reps", "1", "--layers", "1", "--single-layers", "0", "--no-pipeline", "--threads", "1",
                     *[a for p in policies_ for a in ("--policy", p)], "--out", str(out)])
    assert code == 0
    result = json.loads((out / "bench.json").read_text())
    assert result["settings"]["references"] == [1, 2] and not result["skipped"]
    rows = {(r["references"], r["policy"]): r for r in result["rows"]}
    assert set(rows) == {(n, p) for n in (1, 2) for p in ["full", *policies_]}
    extra = image_tokens(1024)   # Edit-Plus encodes the second reference at ~1024² area
    for (count, policy), row in rows.items():
        assert row["noisy_tokens"] == 4 and row["source_tokens"] == 4 + (count - 1) * extra
        assert row["speedup_loop"]["n"] == 1 and set(row["predicted_real"]) == {"Qwen-Image-Edit-Plus"}
    edits = {(e["references"], e["policy"]): e for e in result["edits"]}
    kept = edits[(2, policies_[0])]["trace"][1]["kept"]
    assert kept == math.ceil(0.25 * 4) + math.ceil(0.25 * extra)
    assert edits[(2, policies_[1])]["trace"][1]["kept"] == math.ceil(0.1 * 4) + math.ceil(0.1 * extra)
    assert rows[(2, policies_[0])]["predicted_real"]["Qwen-Image-Edit-Plus"] \
        > rows[(1, policies_[0])]["predicted_real"]["Qwen-Image-Edit-Plus"]
    # the text encoder's lengths follow edit_plus_text_tokens, here with the tiny processor's vision tokens
    processor = build_tiny_qwen_vl_processor()
    side = round(math.sqrt(CONDITION_IMAGE_SIZE))
    vision = int(processor.image_processor(images=[bench_image(side)])["image_grid_thw"].prod()) // 4
    instruction = len(processor.tokenizer("make the circle red").input_ids)
    for count in (1, 2):
        assert tuple(rows[(count, "full")]["text_tokens"]) == edit_plus_text_tokens(count, instruction, vision)
    # the analytic table: the real Edit-Plus at 1024², 1 and 3 references, the run's budgets
    priced = {(p["size"], p["references"], p["keep"]): p for p in result["multi_reference"]}
    assert {(1024, n, k) for n in (1, 2, 3) for k in (0.25, 0.1)} <= set(priced)
    for keep in (0.25, 0.1):
        assert priced[(1024, 3, keep)]["per_pruned_step"] > priced[(1024, 1, keep)]["per_pruned_step"] > 1
        assert priced[(1024, 3, keep)]["reference_tokens"] == 3 * extra
    md = (out / "bench.md").read_text()
    assert "## Sparse Context: single vs multi-reference" in md
    assert f"| 32² | 2 | {policies_[0]} |" in md and "| Qwen-Image-Edit-Plus | 1024² | 0.1 | 1 | 3 |" in md


def test_several_references_need_edit_plus(tmp_path, capsys):
    assert cli.main(["bench", "--references", "1,3", "--out", str(tmp_path)]) == 2
    assert "qwen-plus" in capsys.readouterr().err
    assert bench._references("1, 3,3", "qwen-plus") == (1, 3)
    with pytest.raises(ValueError, match=">= 1"):
        bench._references("0", "qwen-plus")


FLUX2 = ["--references", "1,2", "--sizes", "64", "--steps", "2", "--reps", "1", "--layers", "1",
         "--single-layers", "1", "--no-pipeline", "--threads", "1"]


def test_bench_on_flux2_with_several_references(tmp_path):
    """`--model flux2`: FLUX.2 [klein] with 1 and 2 references, priced on klein 4B; ToPi and SpotEdit, which the
    family refuses, are skipped with the family's reason before any edit."""
    out = tmp_path / "bench"
    labels = ["random:ratio=0.5", "forced-gather:keep=0.5", "forced-spotedit:active=0.5", "topi"]
    assert cli.main(["bench", "--model", "flux2", *FLUX2, *[a for p in labels for a in ("--policy", p)],
                     "--out", str(out)]) == 0
    result = json.loads((out / "bench.json").read_text())
    assert set(result["real_architectures"]) == {"FLUX.2-klein-4B"}
    assert result["real_architectures"]["FLUX.2-klein-4B"]["text_tokens_per_call"] == {"1": [512], "2": [512]}
    for label, mechanism in (("forced-spotedit:active=0.5", "query_skip"), ("topi", "layer_routing")):
        assert result["skipped"][label].startswith(f"refused: policy {label.split(':')[0]!r} needs {mechanism}")
    rows = {(r["references"], r["policy"]): r for r in result["rows"]}
    assert set(rows) == {(n, p) for n in (1, 2) for p in ("full", *labels[:2])}
    for (count, policy), row in rows.items():
        assert row["noisy_tokens"] == 16 and row["source_tokens"] == 16 * count and row["text_tokens"] == [512]
        assert set(row["predicted_real"]) == {"FLUX.2-klein-4B"} and row["predicted_bench_vs_full"] >= 1
        assert row["predicted_bench_vs_full"] == row["predicted_bench"]   # klein's `full` computes every token
    assert rows[(2, "random:ratio=0.5")]["predicted_real"]["FLUX.2-klein-4B"] > 1
    assert "| 64² | 2 | random:ratio=0.5 |" in (out / "bench.md").read_text()


def test_bench_on_flux2_kv_prices_on_klein_9b_against_its_own_full(tmp_path):
    """`--model flux2-kv`: klein KV's `full` reuses the reference K/V, so its FLOP ratio over stock klein is above
    1; the measured speedups, and the FLOP ratios they are compared with, are over it. Attention statistics are
    refused by the KV pipeline."""
    out = tmp_path / "bench"
    labels = ["sparse_context:strategy=saliency,keep=0.25,warmup_steps=1", "sparse_context:strategy=attention"]
    assert cli.main(["bench", "--model", "flux2-kv", *FLUX2, *[a for p in labels for a in ("--policy", p)],
                     "--out", str(out)]) == 0
    result = json.loads((out / "bench.json").read_text())
    assert set(result["real_architectures"]) == {"FLUX.2-klein-9B"}
    assert "Flux2KleinKVPipeline does not run" in result["skipped"]["sparse_context:strategy=attention"]
    rows = {(r["references"], r["policy"]): r for r in result["rows"]}
    for count in (1, 2):
        full, sparse = rows[(count, "full")], rows[(count, labels[0])]
        assert full["predicted_bench"] > 1 and full["predicted_real"]["FLUX.2-klein-9B"] > 1
        assert full["predicted_bench_vs_full"] == 1.0 and full["efficiency"] == full["speedup_loop"]["median"]
        assert sparse["predicted_bench_vs_full"] == sparse["predicted_bench"] / full["predicted_bench"] > 1
    edits = {(e["references"], e["policy"]): e for e in result["edits"]}
    # step 0 extracts the 32 reference rows; step 1 reads ⌈0.25·16⌉ of each from the cache
    assert [(t["kept"], t["active"], t["keys"]) for t in edits[(2, labels[0])]["trace"]] == \
        [(32, None, None), (8, 16, 16 + 8)]
    assert "reuses the reference K/V after the first call" in (out / "bench.md").read_text()


def test_flux2_settings_are_checked_before_the_run(tmp_path, capsys):
    assert cli.main(["bench", "--model", "flux", "--references", "1,2", "--out", str(tmp_path)]) == 2
    assert "needs --model qwen-plus, flux2, flux2-kv" in capsys.readouterr().err
    assert cli.main(["bench", "--model", "flux2", "--sizes", "32", "--out", str(tmp_path)]) == 2
    assert "64 px" in capsys.readouterr().err
