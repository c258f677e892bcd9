"""TokenDrop and the random baselines inside the real loop, on both tiny models."""
import numpy as np
import pytest
from diffusers import FluxKontextPipeline

import actors
import policies


@pytest.fixture(params=["flux", "qwen"])
def pipe(request, flux_pipe, qwen_pipe):
    return flux_pipe if request.param == "flux" else qwen_pipe


def test_tokendrop_keeps_all_then_an_image_dependent_fraction(pipe, image_factory):
    editor = actors.Editor(pipe, policies.make("tokendrop", omega=0.0, full_steps=2))
    ratios = []
    for seed in (0, 1):
        result = editor.edit(image_factory(128, 128, seed=seed), "make the circle red", seed=seed, steps=6,
                             height=128, width=128)
        assert [s.keep_ratio for s in result.trace[:2]] == [1.0, 1.0]
        later = [s.keep_ratio for s in result.trace[2:]]
        assert all(0.0 < r < 1.0 for r in later), later
        assert result.trace[3].keep_mask.shape == (8, 8)
        assert result.trace[3].keep_mask.sum() == result.trace[3].kept
        ratios.append(later)
    assert ratios[0] != ratios[1]


def test_paper_defaults_per_family(pipe, image_factory):
    result = actors.Editor(pipe, policies.make("tokendrop")).edit(
        image_factory(64, 64), "make it red", steps=6, height=64, width=64)
    full_steps = 2 if isinstance(pipe, FluxKontextPipeline) else 4   # paper: Kontext 2 of 28, Qwen 4 of 50
    assert all(s.kept == s.total for s in result.trace[:full_steps])


def test_random_budget_from_trace_is_matched_and_seeded(flux_pipe, image_factory):
    image = image_factory(128, 96)
    adaptive = actors.Editor(flux_pipe, policies.make("tokendrop", omega=0.0)).edit(
        image, "add snow", steps=5, height=96, width=128)
    budget = [s.kept for s in adaptive.trace]
    matched = actors.Editor(flux_pipe, policies.make("random", budget=budget))
    a = matched.edit(image, "add snow", steps=5, height=96, width=128, seed=0)
    b = matched.edit(image, "add snow", steps=5, height=96, width=128, seed=0)
    assert [s.kept for s in a.trace] == budget
    assert all(np.array_equal(x.keep_mask, y.keep_mask) for x, y in zip(a.trace, b.trace))
    assert np.array_equal(a.pixels, b.pixels)


def test_random_with_reg_collapses_toward_source(flux_pipe, image_factory):
    """Proposition 1: random masks + source-consistency regularization pull the result to the source."""
    image = image_factory(128, 128, seed=4)

    def distance(reg):
        policy = policies.make("random", ratio=0.7, reg=reg)
        r = actors.Editor(flux_pipe, policy).edit(image, "make it purple", steps=8, height=128, width=128)
        return float((r.latents - r.source_latents).pow(2).mean())

    assert distance(True) < distance(False)


def test_bad_inputs_are_clear_errors(flux_pipe, image_factory, tmp_path):
    editor = actors.Editor(flux_pipe, policies.make("full"))
    with pytest.raises(actors.EditInputError, match="instruction is empty"):
        editor.edit(image_factory(64, 64), "   ", steps=1)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(actors.EditInputError, match="cannot read image"):
        editor.edit(bad, "make it red", steps=1)
    with pytest.raises(actors.EditInputError, match="smaller than the model's patch"):
        editor.edit(image_factory(64, 64), "make it red", steps=1, height=8, width=64)
    with pytest.raises(actors.EditInputError, match="unknown model"):
        actors.load_pipeline("sdxl")
    with pytest.raises(actors.EditInputError, match="needs --model-path"):
        actors.load_pipeline("flux-kontext")


def test_qwen_edit_plus_with_two_references(image_factory):
    """Edit-Plus: the first reference is encoded at the output size and scored; the second stays whole."""
    pipe = actors.load_pipeline("tiny-qwen-image-edit-plus", device="cpu")
    result = actors.Editor(pipe, policies.make("tokendrop", omega=0.0, full_steps=1)).edit(
        image_factory(64, 64), "put the hat from image 2 on image 1", steps=3, height=64, width=64,
        references=[image_factory(96, 64, seed=5)])
    first, second = result.trace[-1].keep_masks
    assert first.shape == (4, 4) and second.shape == (52, 78)   # 64² output; 2nd at diffusers' ~1024² area
    assert second.all() and not first.all()
    assert result.trace[-1].kept == first.sum() + second.size
