import pytest

import policies
from policies import PolicyError


def test_make_known_policies():
    assert policies.make("full").name == "full"
    assert policies.make("random", ratio=0.3).ratio == 0.3
    assert policies.make("tokendrop", omega="0.2").omega == 0.2


@pytest.mark.parametrize("name,params,fragment", [
    ("nope", {}, "accepted: focus, full, random, regione, sparse_context, spotedit, tokendrop, topi"),
    ("random", {"ratio": 1.0}, "ratio"),
    ("random", {"ratio": -0.1}, "ratio"),
    ("random", {"ratio": "half"}, "must be a number"),
    ("tokendrop", {"omega": "abc"}, "omega"),
    ("tokendrop", {"kernel": 4}, "odd"),
    ("tokendrop", {"reg": "maybe"}, "boolean"),
    ("tokendrop", {"bogus": 1}, "accepted: omega"),
    ("random", {"budget": "3"}, "budget"),
    ("tokendrop", {"full_steps": "120%"}, "full_steps"),
    ("spotedit", {"initial_steps": -1}, "initial_steps"),
    ("sparse_context", {"warmup_steps": "half"}, "warmup_steps"),
])
def test_bad_parameters_are_named(name, params, fragment):
    with pytest.raises(PolicyError, match=fragment):
        policies.make(name, **params)


def test_warm_ups_as_shares_of_the_trajectory_are_resolved_per_edit():
    """A warm-up written as a share keeps a 4-step distilled model from running a warm-up that prunes nothing."""
    import torch

    from policies import RunInfo

    def info(steps):
        return RunInfo(family="flux", noisy_grid=(2, 2), source_grids=((2, 2),), steps=steps,
                       sigmas=torch.linspace(1, 0, steps + 1), seed=0, device=torch.device("cpu"),
                       token_scores=lambda x0, metric: torch.zeros(4), paper={"tokendrop": {"omega": 0.4}})

    assert policies.make("tokendrop", full_steps="7%").start(info(28)).applied()["full_steps"] == 2
    assert policies.make("tokendrop", full_steps="7%").start(info(4)).applied()["full_steps"] == 1
    assert policies.make("random", full_steps="50%").start(info(4)).applied()["full_steps"] == 2
    assert policies.make("sparse_context", warmup_steps="0%").start(info(4)).applied()["warmup_steps"] == 1
    assert policies.make("spotedit", initial_steps="8%", tau=0.2, dilate=0).start(info(50)).applied()[
        "initial_steps"] == 4
    assert policies.make("tokendrop", full_steps=3).start(info(4)).applied()["full_steps"] == 3
