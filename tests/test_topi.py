"""ToPi: the selection is Eq. 10's minimal set, the influence score is Eq. 9, anchors and exempt layers
follow Algorithm 1, τ = 1 is `full`, and calibration files are written, read and checked."""
import itertools
import json
from pathlib import Path

import pytest
import torch

import actors
import policies
from actors.attention_stats import LayerStats
from actors.models import family
from jobs.cli import main as cli
from policies.base import PolicyError, RunInfo, Seen, Step
from policies.topi_select import choose_layers, minimal_mass_set, token_scores


def _run_info(num_layers=4, steps=8, config_hash="abc", architecture="FluxTransformer2DModel"):
    return RunInfo(family="flux", noisy_grid=(4, 4), source_grids=((4, 4),), steps=steps,
                   sigmas=torch.linspace(1, 0, steps + 1), seed=0, device=torch.device("cpu"),
                   num_layers=num_layers, architecture=architecture, config_hash=config_hash,
                   paper=family("flux").paper)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tau", [0.0, 0.3, 0.5, 0.85, 0.99])
def test_selection_is_the_smallest_set_reaching_tau(seed, tau):
    scores = torch.rand(9, generator=torch.Generator().manual_seed(seed)) ** 3
    keep = minimal_mass_set(scores, tau)
    total = float(scores.sum())
    assert float(scores[keep].sum()) >= tau * total - 1e-12
    smallest = min(len(c) for r in range(10) for c in itertools.combinations(range(9), r)
                   if float(scores[list(c)].sum()) >= tau * total - 1e-12)
    assert int(keep.sum()) == smallest
    # and it is the top of the ranking, not any set of that size
    if keep.any() and not keep.all():
        assert scores[keep].min() >= scores[~keep].max()


def test_tau_one_keeps_everything_even_with_negligible_scores():
    scores = torch.tensor([1.0, 1e-30, 0.0, 2.0])
    assert minimal_mass_set(scores, 1.0).all()


def _layer_stats(q, k, v, text, noisy):
    """Statistics computed the slow way: every contribution vector c_ij = A_ij v_j."""
    attention = torch.softmax(torch.einsum("qhd,khd->hqk", q, k) / q.shape[-1] ** 0.5, -1)   # [H, N, N]
    a = attention[:, text: text + noisy, text + noisy:]                                     # [H, G, S]
    vs = v[text + noisy:].transpose(0, 1)                                                   # [H, S, D]
    contributions = a[..., None] * vs[:, None]                                              # [H, G, S, D]
    return a, vs, contributions.norm(dim=-1).sum(1)                                         # Σ_i ‖c_ij‖ per head


def test_influence_score_equals_a_direct_computation_of_eq_9():
    from stats_reference import source_attention

    g = torch.Generator().manual_seed(1)
    text, noisy, source, heads, dim = 3, 5, 7, 2, 4
    stats, direct = {}, torch.zeros(source, dtype=torch.float64)
    for layer in (1, 4):
        q, k, v = (torch.randn(text + noisy + source, heads, dim, generator=g, dtype=torch.float64)
                   for _ in range(3))
        mass, value_norm, influence = source_attention(q[None], k[None], v[None], text_len=text,
                                                       num_noisy=noisy, chunk=2)
        stats[layer] = LayerStats(mass, value_norm, influence, torch.zeros(source))
        direct += _layer_stats(q, k, v, text, noisy)[2].sum(0)
    stats[2] = LayerStats(*(torch.full((heads, source), 1e6),) * 3, torch.zeros(source))   # not selected
    assert torch.allclose(token_scores(stats, (1, 4), "influence"), direct, rtol=1e-6)
    attention_only = stats[1].mass.sum(0) + stats[4].mass.sum(0)
    assert torch.allclose(token_scores(stats, (1, 4), "attention"), attention_only.double())


def test_anchor_schedule_and_exempt_layers():
    stats = {layer: LayerStats(torch.rand(2, 16), torch.rand(2, 16), torch.rand(2, 16), torch.rand(16))
             for layer in range(4)}
    for static, anchors in ((False, {0, 3, 6}), (True, {0})):
        run = policies.make("topi", layers="1,2", exempt_layers=2, interval=3, static=static, tau=0.5) \
            .start(_run_info())
        seen_anchors = []
        for i in range(8):
            step = Step(i, 1 - i / 8, 1 - (i + 1) / 8)
            plan = run.plan(step)
            if plan.attention_layers:
                seen_anchors.append(i)
                assert plan.keep_source is None and plan.attention_layers == (1, 2)
            else:
                assert plan.from_layer == 2 and plan.keep_source is not None and not plan.keep_source.all()
            run.observe(step, Seen(x0=torch.zeros(16, 4), source=torch.zeros(16, 4), velocity=torch.zeros(16, 4),
                                   attention={l: stats[l] for l in plan.attention_layers}))
        assert set(seen_anchors) == anchors
        assert run.summary()["anchors"] == sorted(anchors)


def test_layer_choices_and_parameter_errors():
    assert choose_layers("first", 57, 3, 0) == (0, 1, 2)
    assert choose_layers("last", 57, 3, 0) == (54, 55, 56)
    assert choose_layers("all", 5, 3, 0) == (0, 1, 2, 3, 4)
    random_layers = choose_layers("random", 57, 3, 7)
    assert len(set(random_layers)) == 3 and random_layers == choose_layers("random", 57, 3, 7)
    # the paper's calibrated layers on the real architectures, an error elsewhere without calibration
    real = _run_info(num_layers=57)
    assert policies.make("topi").resolve_layers(real) == ((13, 18, 31), "paper")
    with pytest.raises(PolicyError, match="no calibration"):
        policies.make("topi").resolve_layers(_run_info(num_layers=5, config_hash="unknown"))
    with pytest.raises(PolicyError, match="exempt_layers"):
        policies.make("topi").start(_run_info(num_layers=4))
    for bad in (dict(score="nope"), dict(mode="blend"), dict(tau=1.5), dict(interval=0), dict(layers=3.5)):
        with pytest.raises(PolicyError):
            policies.make("topi", **bad)


def test_tau_one_reproduces_full_and_pruning_is_traced(flux_pipe, image_factory):
    image = image_factory(128, 96)
    kw = dict(seed=0, steps=6, height=96, width=128)
    full = actors.Editor(flux_pipe, policies.make("full")).edit(image, "make it red", **kw)
    same = actors.Editor(flux_pipe, policies.make("topi", tau=1.0, layers="all", exempt_layers=1,
                                                  interval=3)).edit(image, "make it red", **kw)
    assert (same.pixels == full.pixels).all()
    pruned = actors.Editor(flux_pipe, policies.make("topi", tau=0.5, layers="auto", exempt_layers=2,
                                                    interval=3)).edit(image, "make it red", **kw)
    anchors = [s.index for s in pruned.trace if s.from_layer == 0]
    assert anchors == [0, 3]
    assert all(s.kept == s.total for s in pruned.trace if s.index in anchors)
    assert all(s.from_layer == 2 and s.kept < s.total for s in pruned.trace if s.index not in anchors)
    assert all(s.selector_seconds > 0 for s in pruned.trace if s.index in anchors)
    assert pruned.policy_summary["layer_source"].startswith("calibration:")
    assert abs(pruned.pixels - full.pixels).max() > 0


def test_calibrate_writes_a_file_topi_loads_and_checks(tmp_path, flux_pipe, qwen_pipe, image_factory, capsys):
    manifest = tmp_path / "calib.jsonl"
    for i in range(2):
        image_factory(96, 64, seed=i).save(tmp_path / f"{i}.png")
    manifest.write_text("".join(json.dumps({"id": f"r{i}", "image": f"{i}.png", "instruction": "make it red"}) + "\n"
                                for i in range(2))
                        + json.dumps({"id": "bad", "image": "missing.png", "instruction": "x"}) + "\n")
    out = tmp_path / "flux.json"
    assert cli(["calibrate", "--model", "tiny-flux-kontext", "--input", str(manifest), "--out", str(out),
                "--steps", "2", "--size", "96x64", "--top-m", "2"]) == 0
    doc = json.loads(out.read_text())
    assert doc["architecture"]["num_layers"] == 4 and doc["samples"] == 2 and "bad" in doc["errors"]
    assert len(doc["scores"]) == 4 and len(doc["layers"]) == 2
    assert doc["layers"] == sorted(sorted(range(4), key=lambda l: -doc["scores"][l])[:2])
    # the file drives an edit of the model it was made for ...
    result = actors.Editor(flux_pipe, policies.make("topi", layers=str(out), exempt_layers=1, interval=2)) \
        .edit(image_factory(96, 64), "make it red", seed=0, steps=3, height=64, width=96)
    assert result.policy_summary["layers"] == doc["layers"]
    # ... and is refused for another one
    with pytest.raises(PolicyError, match="calibrate"):
        actors.Editor(qwen_pipe, policies.make("topi", layers=str(out), exempt_layers=1)) \
            .edit(image_factory(96, 64), "make it red", seed=0, steps=2, height=64, width=96)


def test_calibrate_on_a_ray_actor_pool_equals_in_process(tmp_path, ray_session, image_factory):
    image_factory(96, 64, seed=3).save(tmp_path / "a.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "image": "a.png", "instruction": "make it blue"}) + "\n")
    args = ["calibrate", "--model", "tiny-flux-kontext", "--input", str(manifest), "--steps", "2",
            "--size", "96x64"]
    assert cli(args + ["--out", str(tmp_path / "local.json")]) == 0
    assert cli(args + ["--out", str(tmp_path / "ray.json"), "--workers", "1"]) == 0
    local, remote = (json.loads((tmp_path / f).read_text()) for f in ("local.json", "ray.json"))
    assert local["layers"] == remote["layers"]
    assert local["scores"] == pytest.approx(remote["scores"], rel=1e-6)


def test_every_ablation_variant_in_the_shipped_config_starts_on_its_model(flux_pipe, image_factory):
    from actors.architecture import describe
    from pipeline.config import expand_grid, load_config

    config = Path(__file__).resolve().parents[1] / "configs" / "topi_ablation.yaml"
    cfg = load_config(str(config), known_policies=set(policies.REGISTRY))
    arch = describe(flux_pipe.transformer)
    run = _run_info(num_layers=arch["num_layers"], config_hash=arch["config_hash"])
    variants = [c for c in expand_grid(cfg) if c.policy == "topi"]
    assert len(variants) == 13
    for conf in variants:
        policies.make("topi", **conf.policy_params).start(run)   # raises on a bad variant
    merged = actors.Editor(flux_pipe, policies.make("topi", mode="merge", exempt_layers=1, interval=3)) \
        .edit(image_factory(96, 64), "make it red", seed=0, steps=4, height=64, width=96)
    assert merged.trace[1].from_layer == 1 and merged.trace[1].kept < merged.trace[1].total


@pytest.mark.parametrize("n,keep,expected", [(16, 0.5, 8), (9, 0.5, 5), (4096, 0.5, 2048), (10, 0.3, 3),
                                             (7, 1.0, 7), (7, 0.0, 0), (3, 0.01, 1)])
def test_topk_keeps_the_ceil_of_keep_times_s_highest_scoring_tokens(n, keep, expected):
    from policies.topi_select import top_k_count, top_k_set

    scores = torch.rand(n, generator=torch.Generator().manual_seed(n)) ** 2
    mask = top_k_set(scores, keep)
    assert top_k_count(n, keep) == expected and int(mask.sum()) == expected
    if 0 < expected < n:
        assert scores[mask].min() >= scores[~mask].max()
    tied = top_k_set(torch.ones(n), keep)   # ties: the lower indices
    assert tied[:expected].all() and not tied[expected:].any()


@pytest.mark.parametrize("variant", [dict(score="influence"), dict(score="attention"), dict(score="similarity"),
                                     dict(layers="first"), dict(layers="last"), dict(layers="random"),
                                     dict(layers="all"), dict(layers="1,2"), dict(static=True),
                                     dict(mode="merge")])
@pytest.mark.parametrize("select", ["mass", "topk"])
def test_every_ablation_variant_runs_with_both_selections(variant, select):
    g = torch.Generator().manual_seed(3)
    stats = {layer: LayerStats(torch.rand(2, 16, generator=g), torch.rand(2, 16, generator=g),
                               torch.rand(2, 16, generator=g), torch.rand(16, generator=g)) for layer in range(4)}
    policy = policies.make("topi", **{"layers": "1,2", "exempt_layers": 1, "interval": 3, "select": select,
                                      "keep": 0.5, "tau": 0.5, **variant})
    run = policy.start(_run_info())
    for i in range(4):
        step = Step(i, 1 - i / 4, 1 - (i + 1) / 4)
        plan = run.plan(step)
        if not plan.attention_layers:
            assert plan.merge == (policy.mode == "merge") and plan.from_layer == 1
            if select == "topk":
                assert int(plan.keep_source.sum()) == 8   # ⌈0.5 · 16⌉
        run.observe(step, Seen(x0=torch.zeros(16, 4), source=torch.zeros(16, 4), velocity=torch.zeros(16, 4),
                               attention={l: stats[l] for l in plan.attention_layers}))
    applied = run.applied()
    assert applied["select"] == select and applied["keep"] == 0.5


def test_topk_selection_parameters_are_checked_and_the_edit_runs(flux_pipe, image_factory):
    for bad in (dict(select="fixed"), dict(keep=1.5), dict(keep=-0.1)):
        with pytest.raises(PolicyError):
            policies.make("topi", **bad)
    result = actors.Editor(flux_pipe, policies.make("topi", select="topk", keep=0.5, exempt_layers=1, interval=3,
                                                    layers="all")) \
        .edit(image_factory(96, 64), "make it red", seed=0, steps=4, height=64, width=96)
    pruned = [s for s in result.trace if s.from_layer == 1]
    assert pruned and all(s.kept == (s.total + 1) // 2 for s in pruned)
    assert result.policy_params["select"] == "topk" and result.policy_params["keep"] == 0.5


def test_auto_layers_tells_apart_models_that_share_a_config(tmp_path, monkeypatch):
    """Two trained models of one config (toy v1 and v2) each have a calibration: `auto` takes the one made for
    the edit's model folder, and refuses to guess when it cannot tell."""
    import dataclasses
    import json

    from policies import calibration

    for model, layers in (("toy-a", [1, 2]), ("toy-b", [3])):
        doc = {"format": calibration.FORMAT, "model": model, "layers": layers,
               "architecture": {"class": "FluxTransformer2DModel", "num_layers": 4, "config_hash": "abc"}}
        (tmp_path / f"{model}.json").write_text(json.dumps(doc))
    monkeypatch.setattr(calibration, "SHIPPED", tmp_path)
    run = _run_info()
    assert calibration.auto_layers(dataclasses.replace(run, model="toy-b")) == ((3,), "calibration:toy-b.json")
    assert calibration.auto_layers(dataclasses.replace(run, model="toy-a"))[0] == (1, 2)
    with pytest.raises(PolicyError, match="2 shipped calibrations fit"):
        calibration.auto_layers(dataclasses.replace(run, model="elsewhere"))
    (tmp_path / "toy-b.json").unlink()   # one file for the config: used whatever the folder's name
    assert calibration.auto_layers(dataclasses.replace(run, model="elsewhere"))[0] == (1, 2)
