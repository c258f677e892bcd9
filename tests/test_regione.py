"""RegionE in the harness: its partition (against scipy's morphology), its stage schedule, and its velocity decay
cache (the official loop's decisions on FLUX.1-Kontext's 1024² schedule)."""
import numpy as np
import pytest
import torch
from scipy import ndimage

import actors
import policies
from actors.caches import CacheError
from actors.caches.velocity_decay import GAMMA, decide
from actors.models import family
from policies import RunInfo, Seen, Step
from policies.regione import erode_dilate


def test_partition_cleanup_equals_scipy_erosion_then_dilation():
    rng = np.random.default_rng(0)
    mask = rng.random((12, 10)) > 0.4
    cross = ndimage.generate_binary_structure(2, 1)
    want = ndimage.binary_dilation(ndimage.binary_erosion(mask, cross, border_value=0), np.ones((5, 5), bool))
    got = erode_dilate(torch.from_numpy(mask).flatten(), (12, 10)).reshape(12, 10).numpy()
    assert np.array_equal(got, want)


def _run(similarity: torch.Tensor, steps: int = 28, **params):
    info = RunInfo(family="flux", noisy_grid=(4, 4), source_grids=((4, 4),), steps=steps,
                   sigmas=torch.linspace(1, 0, steps + 1), seed=0, device=torch.device("cpu"),
                   token_scores=lambda x0, metric: 1.0 - similarity, paper=family("flux").paper)
    return policies.make("regione", **params).start(info)


def test_stages_and_a_partition_made_once():
    similarity = torch.ones(16)
    similarity[:4] = 0.5                         # the first row changes: cos 0.5 <= η 0.93
    run = _run(similarity, erosion_dilation=False)
    plans = []
    for i in range(28):
        step = Step(i, 1 - i / 28, 1 - (i + 1) / 28)
        plans.append(run.plan(step))
        run.observe(step, Seen(x0=torch.zeros(16, 4), source=torch.zeros(16, 4), velocity=torch.zeros(16, 4)))
    full = [i for i, p in enumerate(plans) if p.active_noisy is None]
    assert full == [0, 1, 2, 3, 4, 5, 15, 26, 27]
    assert all(torch.equal(p.active_noisy, similarity <= 0.93) for p in plans if p.active_noisy is not None)
    assert run.applied()["eta"] == 0.93 and run.summary()["edited_share"] == 0.25
    cache = policies.make("regione").needs.cache
    assert cache["name"] == "velocity-decay" and cache["warmup"] == 7   # the official loop computes steps 0-6


def test_velocity_decay_decisions_match_the_official_loop_on_kontext_1024():
    """The official rule (RegionE/FluxKontext/inplace.py) on FLUX.1-Kontext-dev's scheduler at 1024² (4096 tokens):
    of the region-aware steps 7-25, only 8, 10, 11, 13 and 23 compute (besides the forced refresh, 15)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux_kontext import calculate_shift, retrieve_timesteps

    scheduler = FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, max_image_seq_len=4096, base_shift=0.5,
                                                max_shift=1.15, use_dynamic_shifting=True, shift=3.0)
    mu = calculate_shift(4096, 256, 4096, 0.5, 1.15)
    retrieve_timesteps(scheduler, 28, "cpu", sigmas=np.linspace(1.0, 1 / 28, 28), mu=mu)
    sigmas = [float(s) for s in scheduler.sigmas]
    accumulated, computed = 1.0, []
    for i in range(7, 26):
        if i == 15:
            accumulated = 1.0
            continue
        skip, accumulated = decide(accumulated, GAMMA["flux"][i - 1] * (1 - (sigmas[i - 1] - sigmas[i])), 0.04)
        computed += [] if skip else [i]
    assert computed == [8, 10, 11, 13, 23]


def test_velocity_decay_refuses_a_table_it_has_not_got(flux_pipe):
    from conftest import make_image

    image = make_image(64, 64)
    with pytest.raises(CacheError, match="28 steps"):
        actors.Editor(flux_pipe, policies.make("full")).edit(image, "red", steps=6, height=64, width=64,
                                                             cache="velocity-decay")
    r = actors.Editor(flux_pipe, policies.make("full")).edit(image, "red", steps=6, height=64, width=64,
                                                             cache="velocity-decay:gamma=0.5,delta=1")
    assert r.cache_skipped_calls == {"cond": 5}           # every call after the first: 1 − a·r <= 1
    assert r.cache_params == {"name": "velocity-decay", "delta": 1.0, "gamma": 0.5, "warmup": 1}


@pytest.mark.parametrize("family_name", ["flux", "qwen"])
def test_regione_edits_on_both_families_with_its_cache(family_name, flux_pipe, qwen_pipe):
    from conftest import make_image

    pipe = flux_pipe if family_name == "flux" else qwen_pipe
    r = actors.Editor(pipe, policies.make("regione", eta=0.0, erosion_dilation=False, warmup_steps=2,
                                          post_steps=1, refresh_steps=[4], gamma=0.99, delta=0.5)).edit(
        make_image(128, 128, seed=3), "make it red", seed=1, steps=7, height=128, width=128)
    partial = [s.index for s in r.trace if s.active is not None]
    assert partial == [2, 3, 5] and np.isfinite(r.pixels).all()
    for s in r.trace:   # the cache never skips a full step; it may skip partial ones after step 2
        assert all(not c.skipped for c in s.cache_calls) or s.index in (3, 5)
    assert sum(r.cache_skipped_calls.values()) > 0


def test_cli_refuses_the_fitted_table_at_other_step_counts_before_model_work(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import make_image
    make_image(64, 64).save(tmp_path / "in.png")
    base = [sys.executable, "-m", "jobs.cli", "edit", "--model", "tiny-qwen-image-edit", "--policy", "regione",
            "--image", str(tmp_path / "in.png"), "--instruction", "make it red", "--size", "64x64",
            "--out", str(tmp_path / "o.png")]
    refused = subprocess.run(base + ["--steps", "4"], capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "28 steps" in refused.stderr and not (tmp_path / "o.png").exists()
    ran = subprocess.run(base + ["--steps", "9", "--set", "gamma=0.9", "--set", "warmup_steps=2",
                                 "--set", "refresh_steps=[5]", "--set", "post_steps=1"],
                         capture_output=True, text=True, timeout=600, check=True)
    line = json.loads(ran.stdout.strip().splitlines()[-1])
    assert line["params"]["eta"] == 0.8 and line["cache"]["name"] == "velocity-decay"   # Qwen's η and δ
    assert line["cache"]["delta"] == 0.03 and line["flops_ideal_speedup_real"] >= 1
