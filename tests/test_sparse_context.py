"""Sparse Context: a fixed selection after warm-up, per-reference budgets (fixed or adaptive), four
strategies, and multi-reference Edit-Plus inputs."""
import math

import pytest
import torch

import actors
import policies
from policies.base import PolicyError, RunInfo, Seen, Step
from policies.sparse_context import saliency, top_fraction


def _run(grids=((4, 4),), num_layers=4):
    return RunInfo(family="qwen", noisy_grid=grids[0], source_grids=grids, steps=6,
                   sigmas=torch.linspace(1, 0, 7), seed=0, device=torch.device("cpu"), num_layers=num_layers)


def _seen(x0, source, attention=None):
    return Seen(x0=x0, source=source, velocity=torch.zeros_like(x0), attention=attention or {})


def test_residual_keeps_the_tokens_that_moved_with_a_budget_per_reference():
    run = policies.make("sparse_context", strategy="residual", keep=[0.25, 0.5], warmup_steps=2) \
        .start(_run(((4, 4), (2, 3))))
    source = torch.zeros(16 + 6, 3)
    source[16:] = torch.tensor([0.0, 1, 2, 3, 4, 10])[:, None]   # reference 2: mean 10/3, far: 5, 0, 1
    x0 = torch.zeros(16, 3)
    x0[[1, 5, 9, 13]] = 1.0                              # four tokens of the aligned reference moved
    assert run.plan(Step(0, 1.0, 0.8)).keep_source is None
    run.observe(Step(0, 1.0, 0.8), _seen(torch.zeros(16, 3), source))   # warm-up: nothing chosen yet
    assert run.plan(Step(1, 0.8, 0.6)).keep_source is None
    run.observe(Step(1, 0.8, 0.6), _seen(x0, source))
    keeps = [run.plan(Step(i, 0.5, 0.4)).keep_source for i in range(2, 6)]
    assert all(torch.equal(k, keeps[0]) for k in keeps)   # one fixed selection for the rest of the edit
    keep = keeps[0]
    assert torch.nonzero(keep[:16]).flatten().tolist() == [1, 5, 9, 13]
    assert torch.nonzero(keep[16:]).flatten().tolist() == [0, 1, 5]     # ⌈0.5·6⌉ most salient
    assert run.summary()["kept_per_reference"] == [4, 3]


def test_adaptive_budget_follows_the_input():
    policy = policies.make("sparse_context", strategy="residual", adaptive=True, mass=0.9, min_keep=0.0,
                           warmup_steps=1)
    kept = []
    for moved in (2, 8):
        run = policy.start(_run())
        x0 = torch.zeros(16, 3)
        x0[:moved] = 1.0
        run.observe(Step(0, 1.0, 0.5), _seen(x0, torch.zeros(16, 3)))
        kept.append(int(run.plan(Step(1, 0.5, 0.0)).keep_source.sum()))
    assert kept == [math.ceil(0.9 * 2), math.ceil(0.9 * 8)]


def test_attention_strategy_asks_for_statistics_at_the_last_warmup_step():
    from actors.attention_stats import LayerStats

    run = policies.make("sparse_context", strategy="attention", keep=0.25, warmup_steps=2, layers="1,3") \
        .start(_run())
    assert run.plan(Step(0, 1.0, 0.8)).attention_layers == ()
    assert run.plan(Step(1, 0.8, 0.6)).attention_layers == (1, 3)
    mass = torch.zeros(2, 16)
    mass[:, [3, 7]] = 1.0
    mass[0, 11] = 1.5
    stats = {layer: LayerStats(mass, mass, mass, torch.zeros(16)) for layer in (1, 3)}
    run.observe(Step(1, 0.8, 0.6), _seen(torch.zeros(16, 3), torch.zeros(16, 3), stats))
    # ⌈0.25·16⌉ = 4 tokens: 3 and 7 (mass 4 over two layers), 11 (3), then the first zero (ties by position)
    assert torch.nonzero(run.plan(Step(2, 0.6, 0.4)).keep_source).flatten().tolist() == [0, 3, 7, 11]


def test_random_is_seeded_per_edit_and_saliency_ranks_by_centred_norm():
    a = policies.make("sparse_context", strategy="random", warmup_steps=1).start(_run())
    b = policies.make("sparse_context", strategy="random", warmup_steps=1).start(_run())
    for run in (a, b):
        run.observe(Step(0, 1.0, 0.5), _seen(torch.zeros(16, 3), torch.zeros(16, 3)))
    assert torch.equal(a.plan(Step(1, 0.5, 0)).keep_source, b.plan(Step(1, 0.5, 0)).keep_source)
    z = torch.tensor([[1.0, 1.0], [1.0, 1.0], [3.0, 1.0], [1.0, -2.0]])
    assert top_fraction(saliency(z), 0.5).tolist() == [False, False, True, True]
    for bad in (dict(strategy="nope"), dict(keep=1.5), dict(warmup_steps=0), dict(layers="x")):
        with pytest.raises(PolicyError):
            policies.make("sparse_context", **bad)


def test_multi_reference_edit_plus_keeps_a_budget_per_reference(image_factory):
    pipe = actors.load_pipeline("tiny-qwen-image-edit-plus", device="cpu")
    policy = policies.make("sparse_context", strategy="saliency", keep=[0.5, 0.25], warmup_steps=1)
    result = actors.Editor(pipe, policy).edit(image_factory(96, 64), "put the object from image 2 here",
                                              seed=0, steps=2, height=64, width=96,
                                              references=[image_factory(64, 64, seed=4)])
    first, second = result.policy_summary["tokens_per_reference"]
    assert result.policy_summary["kept_per_reference"] == [math.ceil(first / 2), math.ceil(second / 4)]
    assert result.trace[1].kept == math.ceil(first / 2) + math.ceil(second / 4)
    assert result.trace[1].keep_masks[1].sum() == math.ceil(second / 4)
