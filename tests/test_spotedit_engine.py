"""SpotEdit inside the real loop on both tiny models: equality with `full` when nothing is skipped, active
counts and full reset steps in the trace, final replacement, the fusion / condition-cache variants."""
import pytest
import torch

import actors
from spot_helpers import median_score
import policies

PROMPT = "make the circle red"


def median_tau(monkeypatch, pipe, image, size, steps):
    """A τ that splits the tiny model's scores in two: the median score seen by a probe run."""
    return median_score(monkeypatch, pipe, image, size, steps,
                        policies.make("spotedit", tau=-1.0, initial_steps=1, reset_steps=[]))


@pytest.mark.parametrize("family", ["flux", "qwen"])
def test_tau_below_every_score_equals_full(family, flux_pipe, qwen_pipe, image_factory):
    pipe, size, steps = (flux_pipe, 96, 5) if family == "flux" else (qwen_pipe, 64, 3)
    image = image_factory(size, size, seed=3)
    full = actors.Editor(pipe, policies.make("full")).edit(image, PROMPT, steps=steps, height=size, width=size)
    spot = actors.Editor(pipe, policies.make("spotedit", tau=-1.0, initial_steps=1, reset_steps=[])).edit(
        image, PROMPT, steps=steps, height=size, width=size)
    assert all(s.active is None and s.keys is None for s in spot.trace)
    assert (spot.latents - full.latents).abs().max() <= 1e-5
    assert abs(spot.pixels - full.pixels).max() <= 1e-5


def test_flux_variants_skip_reset_and_replace(flux_pipe, image_factory, monkeypatch):
    size, steps, image = 128, 6, image_factory(128, 128, seed=1)
    tau = median_tau(monkeypatch, flux_pipe, image, size, steps)
    full = actors.Editor(flux_pipe, policies.make("full")).edit(image, PROMPT, steps=steps, height=size, width=size)
    latents = {}
    for fusion in ("spotfusion", "static", "none"):
        for cc in (True, False):
            policy = policies.make("spotedit", tau=tau, initial_steps=2, reset_steps=[4], fusion=fusion,
                                   condition_cache=cc)
            r = actors.Editor(flux_pipe, policy).edit(image, PROMPT, steps=steps, height=size, width=size)
            n = r.trace[0].noisy
            assert [s.active is None for s in r.trace] == [True, True, False, False, True, False]
            for s in (r.trace[2], r.trace[3], r.trace[5]):
                assert 0 < s.active < n
                assert s.keys == (s.active + s.total if fusion == "none" else n + s.total)
            # final replacement: the non-edited tokens of the last skipping step are the source latent, exactly
            replaced = (r.latents == r.source_latents).all(dim=-1)
            assert int(replaced.sum()) == r.policy_summary["replaced"] == n - r.trace[5].active
            assert not torch.equal(r.latents, full.latents)
            latents[fusion, cc] = r.latents
    values = list(latents.values())
    assert all(not torch.equal(a, b) for i, a in enumerate(values) for b in values[i + 1:])


def test_qwen_spotedit_with_true_cfg(qwen_pipe, image_factory, monkeypatch):
    size, steps, image = 64, 4, image_factory(64, 64, seed=1)
    tau = median_tau(monkeypatch, qwen_pipe, image, size, steps)
    r = actors.Editor(qwen_pipe, policies.make("spotedit", tau=tau, initial_steps=2, reset_steps=[], dilate=0)).edit(
        image, PROMPT, steps=steps, height=size, width=size)
    assert r.trace[0].active is None and r.trace[1].active is None
    assert all(0 < s.active < s.noisy for s in r.trace[2:])
    replaced = (r.latents == r.source_latents).all(dim=-1)
    assert int(replaced.sum()) == r.policy_summary["replaced"] > 0
    assert r.trace[2].selector_seconds > 0


@pytest.mark.parametrize("fixture", ["flux_pipe", "qwen_pipe"])
def test_a_step_with_no_active_noisy_token_runs(fixture, request):
    """tau above every score: the partial steps compute no noisy query (Qwen's RoPE used to fail on 0 rows)."""
    import PIL.Image

    import actors
    import policies

    pipe = request.getfixturevalue(fixture)
    result = actors.Editor(pipe, policies.make("spotedit", tau=1e9)).edit(
        PIL.Image.new("RGB", (64, 64), (90, 120, 200)), "make it red", seed=0, steps=8, height=64, width=64)
    assert [s.active for s in result.trace][-2:] == [0, 0] and result.query_ratio_mean < 1
