"""One model registry (`actors.models`): a family added from a temporary module (its record plus one registry
entry) edits and is priced by the cost model with no other table to touch; a policy without a default for a
family refuses it; the README's demo config prices its model in a dry run."""
import textwrap

import pytest
import torch

import actors
import costs
import policies
from actors import models
from policies.base import PolicyError, RunInfo

FAKE_FAMILY = textwrap.dedent('''
    """A fake family: Flux's engine parts under another name, its own pipeline class, paper defaults and
    priced architecture."""
    from dataclasses import replace

    from diffusers import FluxKontextPipeline

    from actors.families import FLUX_KONTEXT, Architecture
    from actors.families.flux_kontext.architecture import FLUX_KONTEXT_DEV_CONFIG
    from actors.models import ModelSpec, register_model


    class FakePipeline(FluxKontextPipeline):
        """The family is found by this class."""


    FAKE = replace(FLUX_KONTEXT, name="fake", paper={"tokendrop": {"omega": 0.25, "full_steps": 1}})
    FAKE_ARCH = Architecture(name="Fake-Transformer",
                             transformer={**FLUX_KONTEXT_DEV_CONFIG, "num_layers": 2, "num_single_layers": 4},
                             text_tokens=lambda references: (77,), params=1e9, encoder_params=1e8)


    def build_tiny_fake():
        from actors.tiny_models import build_tiny_flux_kontext
        return FakePipeline(**build_tiny_flux_kontext().components)


    SPEC = register_model(ModelSpec("tiny-fake", FAKE, FakePipeline, FAKE_ARCH, tiny=build_tiny_fake))
''')


@pytest.fixture
def fake_family(plugin_module):
    """Imports the fake family's module; the registry is as before afterwards."""
    return plugin_module("fake_family", FAKE_FAMILY, models.MODELS)


def test_a_family_from_a_temporary_module_edits_with_its_own_defaults(fake_family, image_factory):
    pipe = actors.load_pipeline("tiny-fake", device="cpu")
    assert type(pipe) is fake_family.FakePipeline and models.family_of(pipe).name == "fake"
    assert models.family("fake") is fake_family.FAKE
    result = actors.Editor(pipe, policies.make("tokendrop")).edit(
        image_factory(64, 64), "make it red", steps=3, height=64, width=64)
    assert result.policy_params["omega"] == 0.25 and result.policy_params["full_steps"] == 1   # the fake's own
    assert result.trace[0].kept == result.trace[0].total and len(result.trace) == 3
    with pytest.raises(PolicyError, match="spotedit' has no default dilate for model family 'fake'"):
        actors.Editor(pipe, policies.make("spotedit")).edit(image_factory(64, 64), "make it red", steps=2,
                                                          height=64, width=64)


def test_a_family_from_a_temporary_module_is_priced_and_dry_runs(fake_family, tmp_path):
    from pipeline.config import expand_run, load_config
    from pipeline.dry_run import dry_run

    fake = costs.edit_cost("tiny-fake", 256, 256, 10, 3.5)
    assert fake.architecture == "Fake-Transformer" and fake.text == (77,) and fake.tokens == 256
    flux = costs.edit_cost("tiny-flux-kontext", 256, 256, 10, 3.5)
    assert 0 < fake.flops < flux.flops / 5    # 6 blocks against 57, shorter text
    config = tmp_path / "fake.yaml"
    config.write_text("input: configs/demo_manifest.jsonl\noutput: results\nmodels:\n  - name: tiny-fake\n"
                      "policies:\n  - name: full\n  - name: tokendrop\nresolutions: [256]\nseeds: [0]\n")
    text, plan = dry_run(expand_run(load_config(str(config), [])), records=2)
    assert "costed as Fake-Transformer" in text
    assert plan["edits"] == 4 and plan["flops_per_record"] == pytest.approx(2 * costs.edit_cost(
        "tiny-fake", 256, 256, 28, 3.5).flops)   # the family's protocol: Flux's adapter, 28 steps


def test_the_registry_refuses_a_second_meaning():
    spec = models.model("tiny-flux-kontext")
    with pytest.raises(ValueError, match="already registered"):
        models.register_model(spec)
    from dataclasses import replace

    other = replace(spec, name="tiny-other", family=replace(spec.family, name="other"))
    with pytest.raises(ValueError, match="already belongs to family 'flux'"):
        models.register_model(other)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        costs.edit_cost("nope", 256, 256, 8, 3.5)


def test_every_registered_model_is_priced():
    for name, spec in models.MODELS.items():
        priced = costs.for_model(name)
        assert priced.name == spec.architecture.name and priced.arch.num_layers > 0
    assert costs.for_model("qwen-image-edit").text(guidance_scale=1.0) == (1389,)   # true CFG off
    assert costs.for_model("flux-kontext").text(guidance_scale=1.0) == (512,)


@pytest.mark.parametrize("name,params,missing", [("tokendrop", {}, "omega"), ("spotedit", {}, "dilate"),
                                                  ("tokendrop", {"omega": 0.2}, "full_steps")])
def test_a_policy_refuses_a_family_it_has_no_default_for(name, params, missing):
    run = RunInfo(family="unknown", noisy_grid=(4, 4), source_grids=((4, 4),), steps=4,
                  sigmas=torch.linspace(1, 0, 5), seed=0, device=torch.device("cpu"),
                  token_scores=lambda x0, metric: torch.zeros(16))
    with pytest.raises(PolicyError, match=f"no default {missing} for model family 'unknown'"):
        policies.make(name, **params).start(run)
    # given explicitly, the same policy needs no default
    explicit = {"tokendrop": {"omega": 0.2, "full_steps": 1}, "spotedit": {"tau": 0.2, "dilate": 0}}[name]
    policies.make(name, **explicit).start(run)


def test_topi_takes_the_paper_layers_of_the_family_only():
    def run(family):
        return RunInfo(family=family, noisy_grid=(4, 4), source_grids=((4, 4),), steps=4,
                       sigmas=torch.linspace(1, 0, 5), seed=0, device=torch.device("cpu"), num_layers=57,
                       config_hash="none", paper=models.family(family).paper if family != "unknown" else {})
    assert policies.make("topi").resolve_layers(run("flux")) == ((13, 18, 31), "paper")
    with pytest.raises(PolicyError, match="no calibration"):
        policies.make("topi").resolve_layers(run("unknown"))


def test_the_demo_config_dry_runs(capsys):
    """The README's demo: its model (toy-flux-kontext-v4) is priced as FLUX.1-Kontext-dev."""
    from jobs.cli import main as cli

    assert cli(["run", "configs/demo.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "toy-flux-kontext-v4" in out and "costed as FLUX.1-Kontext-dev" in out and "edits: 25" in out
