"""A new policy that recombines existing mechanisms is one module, registered where it is defined."""
import textwrap

import pytest

import actors
import policies

KEEP_CORNERS = textwrap.dedent('''
    """Keeps the `size` x `size` source tokens in each corner of the first reference; full first step."""
    from typing import Annotated, Any

    import torch
    from pydantic import Field

    from policies import Plan, Policy, PolicyRun, RunInfo, Step
    from policies.params import Integer


    class KeepCornersRun(PolicyRun):
        def __init__(self, policy: "KeepCorners", run: RunInfo) -> None:
            self.policy, self.run = policy, run

        def plan(self, step: Step) -> Plan:
            if step.index == 0:
                return Plan()
            rows, cols = self.run.source_grids[0]
            grid = torch.zeros(rows, cols, dtype=torch.bool)
            s = self.policy.size
            grid[:s, :s] = grid[:s, -s:] = grid[-s:, :s] = grid[-s:, -s:] = True
            keep = torch.zeros(self.run.num_source, dtype=torch.bool)
            keep[: rows * cols] = grid.flatten()
            return Plan(keep_source=keep.to(self.run.device))

        def applied(self) -> dict[str, Any]:
            return self.policy.params()


    class KeepCorners(Policy, name="keep_corners"):
        size: Annotated[Integer, Field(ge=1)] = 1

        def start(self, run: RunInfo) -> KeepCornersRun:
            return KeepCornersRun(self, run)
''')


@pytest.fixture
def keep_corners(plugin_module):
    """Imports the one-file policy from a temporary module; the registry is as before afterwards."""
    return plugin_module("keep_corners_policy", KEEP_CORNERS, policies.REGISTRY)


def test_a_policy_defined_in_one_module_is_registered_and_runs(keep_corners, flux_pipe, image_factory):
    assert "keep_corners" in policies.REGISTRY
    policy = policies.make("keep_corners")
    assert isinstance(policy, keep_corners.KeepCorners) and policy.name == "keep_corners"
    assert policy.needs == policies.Needs() and policy.regularize is False
    assert policy.params() == {"size": 1}
    with pytest.raises(policies.PolicyError, match=r"parameter 'size' must be >= 1, got 0"):
        policies.make("keep_corners", size=0)
    unknown = r"policy 'keep_corners' has no parameter 'bogus'; accepted: size"
    with pytest.raises(policies.PolicyError, match=unknown):
        policies.make("keep_corners", bogus=1)
    result = actors.Editor(flux_pipe, policy).edit(image_factory(64, 64), "x", steps=2, height=64, width=64)
    assert result.trace[0].kept == result.trace[0].total
    assert result.trace[1].kept == 4          # one token in each corner of the 4x4 source grid
    assert result.policy_params == {"size": 1}


def test_a_taken_name_is_refused(keep_corners):
    with pytest.raises(policies.PolicyError, match="policy name 'keep_corners' is taken by keep_corners_policy"):
        class KeepCorners(policies.Policy, name="keep_corners"):   # same class name, another module
            def start(self, run):
                return None   # never called: defining the class is what is refused
    with pytest.raises(policies.PolicyError, match="policy name 'tokendrop' is taken"):
        class Drop(policies.Policy, name="tokendrop"):
            def start(self, run):
                return None   # never called: defining the class is what is refused
    assert policies.REGISTRY["tokendrop"] is policies.tokendrop.TokenDrop
    assert policies.REGISTRY["keep_corners"] is keep_corners.KeepCorners


def test_registry_is_the_builtin_policies_again():
    assert sorted(policies.REGISTRY) == ["focus", "full", "random", "regione", "sparse_context", "spotedit", "tokendrop",
                                         "topi"]
