"""configs/papers/: every preset parses, names its paper table and the numbers to compare with, and dry-runs
(grid, edits, GPU-hours) without a model or Ray; one starts on the tiny model through the run's own checks."""
from pathlib import Path

import pytest

import policies
from costs import DEFAULT_GPU_TFLOPS, edit_cost
from pipeline.dry_run import dry_run
from jobs.ablate import main as ablate
from jobs.preflight import check_run
from pipeline.config import expand_grid, expand_run, load_config

PAPERS = Path(__file__).resolve().parents[1] / "configs" / "papers"
PRESETS = sorted(PAPERS.glob("*.yaml"))
ROOT = Path(__file__).resolve().parents[1]


def test_there_is_a_preset_per_seed():
    names = {p.stem.split("_")[0] for p in PRESETS}
    assert {"tokendrop", "topi", "spotedit", "sparse"} <= names and len(PRESETS) >= 14


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_parses_names_its_table_and_dry_runs(preset):
    header = [line for line in preset.read_text().splitlines() if line.startswith("#")]
    assert header and any("Paper" in line or "paper" in line for line in header)
    assert any(word in " ".join(header) for word in ("Table", "Figure", "no table"))
    cfg = load_config(str(preset), known_policies=set(policies.REGISTRY))
    assert all(str(m.path).startswith("/path/to/") for m in cfg.models)   # a placeholder to override
    run = expand_run(cfg)
    configs = run.configurations
    check_run(run)                                           # every policy builds, sizes allowed
    assert all(c.steps and c.guidance_scale is not None for c in configs)
    text, plan = dry_run(run, source=str(preset))            # the placeholder input: records unknown
    assert plan["records"] is None and plan["edits"] is None and "pass --records N" in text
    assert plan["hours_per_record"] > 0 and "upper bound" in text
    text, plan = dry_run(run, records=10)
    assert plan["edits"] == 10 * len(configs)
    assert plan["gpu_hours"] == pytest.approx(10 * plan["hours_per_record"])


def test_protocols_are_the_papers():
    by_name = {p.stem: load_config(str(p), known_policies=set(policies.REGISTRY)) for p in PRESETS}
    kontext = expand_grid(by_name["tokendrop_t1_kontext_pie"])
    assert {(c.steps, c.guidance_scale) for c in kontext} == {(28, 3.5)}
    qwen = expand_grid(by_name["tokendrop_t1_qwen_gedit"])
    assert {(c.steps, c.guidance_scale) for c in qwen} == {(50, 4.0)}
    assert {c.policy_params.get("omega") for c in qwen} == {None, 0.3}
    topk = [c for c in expand_grid(by_name["topi_t2_t5_layers"]) if c.policy == "topi"]
    assert len(topk) == 5 and all(c.policy_params["select"] == "topk" and c.policy_params["keep"] == 0.5
                                  for c in topk)
    spot = [c for c in expand_grid(by_name["spotedit_t1_kontext_pie"]) if c.policy == "spotedit"]
    assert {c.policy_params["alpha"] for c in spot} == {"paper", "official"} and spot[0].steps == 50


def test_gpu_hours_follow_the_flop_model():
    kontext = edit_cost("flux-kontext", 1024, 1024, 28, 3.5)
    qwen = edit_cost("qwen-image-edit", 1024, 1024, 50, 4.0)
    assert kontext.calls_per_step == 1 and qwen.calls_per_step == 2
    assert edit_cost("qwen-image-edit", 1024, 1024, 50, 1.0).calls_per_step == 1   # true CFG off
    assert edit_cost("flux-kontext", 1024, 1024, 56, 3.5).flops == pytest.approx(2 * kontext.flops)
    # FLUX.1-Kontext at 1024² with 512 text tokens: ~8.7k tokens x ~12B parameters x 2 -> ~0.2-0.3 PFLOP per call
    assert 0.15e15 < kontext.flops / 28 < 0.4e15


def test_dry_run_command_prints_the_grid_and_cost(capsys):
    preset = PAPERS / "tokendrop_t1_kontext_pie.yaml"
    assert ablate([str(preset), "--dry-run", "--records", "700", "--gpu-tflops", "400"]) == 0
    out = capsys.readouterr().out
    assert "700 records x 4 configurations" in out and "edits: 2800" in out and "GPU-h" in out
    assert f"{DEFAULT_GPU_TFLOPS:g} TFLOP/s" in out


def test_a_preset_starts_on_the_tiny_model(tmp_path):
    import actors

    preset = PAPERS / "tokendrop_t1_kontext_pie.yaml"
    cfg = load_config(str(preset), [
        "models.0.name=tiny-flux-kontext", "models.0.path=null", f"input={ROOT / 'configs' / 'demo_manifest.jsonl'}",
        "steps=2", "resolutions=[64]", f"output={tmp_path / 'out'}"], known_policies=set(policies.REGISTRY))
    run = expand_run(cfg)
    configs = run.configurations
    check_run(run)
    text, plan = dry_run(run)
    assert plan["records"] and plan["edits"] == plan["records"] * len(configs)
    conf = next(c for c in configs if c.policy == "tokendrop")
    pipe = actors.load_pipeline(conf.model_name)
    from PIL import Image

    result = actors.Editor(pipe, policies.make(conf.policy, **conf.policy_params)).edit(
        Image.new("RGB", (64, 64), (90, 120, 200)), "make it red", seed=conf.seed, steps=conf.steps,
        guidance_scale=conf.guidance_scale, height=conf.height, width=conf.width)
    assert len(result.trace) == 2 and result.policy_params["omega"] == 0.4
