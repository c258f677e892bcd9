"""One plug-in seam: policies, temporal caches and peers share one registry base (core.registry), and a cache is
an engine mechanism that a policy may declare (`Needs.cache`) as well as an edit may ask for."""
import ast
import textwrap
from pathlib import Path

import pydantic
import pytest
import torch
from diffusers.hooks import HookRegistry

import actors
import policies
from actors import caches, peers
from actors.caches.runtime import BLOCK_HOOK, ROOT_HOOK
from actors.routing import transformer_layers
from core.registry import Plugin, PluginError, Registry

ROOT = Path(__file__).resolve().parents[1]
SIZE, STEPS = 64, 6

CACHED_POLICY = textwrap.dedent('''
    """Every source token, every step; a TaylorSeer cache predicts the calls its interval leaves out."""
    from typing import Annotated, Any

    from pydantic import Field

    from policies import Needs, Plan, Policy, PolicyRun, RunInfo, Step
    from policies.params import Integer


    class CachedFullRun(PolicyRun):
        def __init__(self, policy: "CachedFull") -> None:
            self.policy = policy

        def plan(self, step: Step) -> Plan:
            return Plan()

        def applied(self) -> dict[str, Any]:
            return self.policy.params()


    class CachedFull(Policy, name="cached_full"):
        interval: Annotated[Integer, Field(ge=1)] = 2

        @property
        def needs(self) -> Needs:
            return Needs(cache=f"taylorseer:interval={self.interval},warmup=0")

        def start(self, run: RunInfo) -> CachedFullRun:
            return CachedFullRun(self)
''')


@pytest.fixture
def cached_full(plugin_module):
    """The one-file policy from a temporary module; the registry is as before afterwards."""
    return plugin_module("cached_full_policy", CACHED_POLICY, policies.REGISTRY)


def _block_calls(pipe):
    """Counts the first transformer block's forward calls: a predicted (skipped) call runs no block."""
    calls = []
    handle = transformer_layers(pipe.transformer)[0].register_forward_pre_hook(lambda *_: calls.append(1))
    return calls, handle


def _no_hooks_left(pipe):
    for module in [pipe.transformer, *transformer_layers(pipe.transformer)]:
        registry = getattr(module, "_diffusers_hook", None)
        if isinstance(registry, HookRegistry):
            assert ROOT_HOOK not in registry.hooks and BLOCK_HOOK not in registry.hooks


def test_a_policy_declares_a_cache_and_the_engine_runs_it(cached_full, flux_pipe, image_factory):
    image = image_factory(SIZE, SIZE)
    policy = policies.make("cached_full")
    calls, handle = _block_calls(flux_pipe)
    try:
        result = actors.Editor(flux_pipe, policy).edit(image, "make it red", seed=1, steps=STEPS, height=SIZE,
                                                       width=SIZE)
    finally:
        handle.remove()
    # interval 2 from step 0: steps 0, 1, 3, 5 computed, 2 and 4 predicted without running any block
    assert len(calls) == 4
    assert result.cache_calls == {"cond": STEPS} and result.cache_skipped_calls == {"cond": 2}
    assert [s.cache_calls[0].skipped_call for s in result.trace] == [False, False, True, False, True, False]
    assert result.cache_params["name"] == "taylorseer" and result.cache_params["interval"] == 2
    _no_hooks_left(flux_pipe)

    # the same edit through the configuration's path gives the same latents, bit for bit
    plain = policies.make("full")
    asked = actors.Editor(flux_pipe, plain).edit(image, "make it red", seed=1, steps=STEPS, height=SIZE,
                                                 width=SIZE, cache="taylorseer:interval=2,warmup=0")
    assert torch.equal(asked.latents, result.latents) and asked.cache_skipped_calls == {"cond": 2}

    # a parameter of the policy reaches its cache; asking for the same cache again is no conflict
    every = actors.Editor(flux_pipe, policies.make("cached_full", interval=1)).edit(
        image, "x", steps=3, height=SIZE, width=SIZE, cache=caches.make("taylorseer", interval=1, warmup=0))
    assert every.cache_skipped_calls == {"cond": 0}


def test_a_second_cache_for_a_policy_with_its_own_is_refused(cached_full, flux_pipe, image_factory):
    editor = actors.Editor(flux_pipe, policies.make("cached_full"))
    with pytest.raises(caches.CacheError, match="policy 'cached_full' runs cache 'taylorseer:.*'; the edit asks "
                                                "for 'first-block' too: one cache per edit"):
        editor.edit(image_factory(SIZE, SIZE), "x", steps=2, height=SIZE, width=SIZE, cache="first-block")



def test_a_cache_the_policy_declares_is_in_the_row(cached_full, image_factory, tmp_path):
    """The GPU stage writes the cache's columns whether the configuration or the policy asked for it."""
    import numpy as np

    from pipeline.configuration import Configuration
    from pipeline.edit_stage import EditActor

    conf = Configuration(model="tiny-flux-kontext", model_name="tiny-flux-kontext", model_path=None,
                         model_options={}, policy="cached_full", policy_params={}, height=SIZE, width=SIZE, seed=0,
                         steps=STEPS, guidance_scale=None, resize_filter=None, cache=None, cache_label=None,
                         config_id="c", label="cached_full", full_config_id="c")
    actor = EditActor("tiny-flux-kontext", None, str(tmp_path), "run", {"c": conf.to_row()},
                      metrics={"compute": []})
    inputs = {"source": np.asarray(image_factory(SIZE, SIZE).convert("RGB")), "references": []}
    row = actor.edit(conf, inputs, {"id": "r", "instruction": "x", "category": None}, None).row
    assert row["cache"] == "taylorseer interval=2 warmup=0 stop=None order=1" and row["cache_skipped_calls"] == 2
    assert row["cache_calls"] == STEPS


# (make, error, a known name, an unknown-parameter call, a bad value and what the message must say)
KINDS = {
    "policy": (policies.make, policies.PolicyError, "random",
               {"ratio": 1.0}, "policy 'random': parameter 'ratio' must lie in [0.0, 1.0), got 1.0",
               "focus, full, random, regione, sparse_context, spotedit, tokendrop, topi"),
    "cache": (caches.make, caches.CacheError, "first-block",
              {"threshold": "yes"}, "cache 'first-block': parameter 'threshold' must be a number, got 'yes'",
              "first-block, magcache, taylorseer, velocity-decay"),
    "peer": (peers.make, peers.PeerError, "cache-dit",
             {"front": 0}, "peer 'cache-dit': parameter 'front' must be >= 1, got 0",
             "cache-dit, flux2-klein-kv, regione"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_speaks_through_the_one_registry_base(kind):
    make, error, known, bad, message, accepted = KINDS[kind]
    assert issubclass(error, PluginError)
    assert isinstance(make(known), Plugin) and make(known).name == known
    with pytest.raises(error) as err:
        make("nope")
    assert str(err.value) == f"unknown {kind} 'nope'; accepted: {accepted}"
    with pytest.raises(error) as err:
        make(known, bogus=1)
    assert str(err.value).startswith(f"{kind} {known!r} has no parameter 'bogus'; accepted: ")
    with pytest.raises(error) as err:
        make(known, **bad)
    assert str(err.value) == message


def test_a_new_kind_of_plugin_registers_by_name_and_refuses_a_taken_one():
    class WidgetError(PluginError):
        pass

    widgets: Registry = Registry("widget", WidgetError)

    class Widget(Plugin):
        registry = widgets

    class Knob(Widget, name="knob"):
        turns: int = 1

    assert list(widgets) == ["knob"] and widgets.make("knob", turns=3).turns == 3
    assert Knob().params() == {"turns": 1}
    with pytest.raises(WidgetError, match=r"widget 'knob': parameter 'turns' must be an integer, got 'x'"):
        widgets.make("knob", turns="x")
    with pytest.raises(WidgetError, match="widget name 'knob' is taken by test_plugin_seam"):
        class Other(Widget, name="knob"):
            pass
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        Knob().turns = 2


def test_plugins_import_no_private_name_of_another_package():
    """Caches and peers once imported `policies.params._message`; the seam's packages use public names only."""
    folders = ["core", "policies", "actors/caches", "actors/peers"]
    found = []
    for path in (p for f in folders for p in (ROOT / f).glob("*.py")):
        own = path.relative_to(ROOT).parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                top = node.module.split(".")[0]
                if top != own and (ROOT / top).is_dir():
                    found += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not found
