"""With nothing dropped, our loop must reproduce diffusers' own pipelines (fp32, CPU)."""
import numpy as np
import pytest
import torch

import actors
import policies

TOL = 1e-3   # max abs difference on output pixels in [0, 1]


def _reference(pipe, image, prompt, seed, steps, **kwargs):
    return pipe(image=image, prompt=prompt, num_inference_steps=steps, output_type="np",
                generator=torch.Generator("cpu").manual_seed(seed), **kwargs).images[0]


@pytest.mark.parametrize("width,height,steps", [(96, 64, 3), (64, 64, 1), (128, 80, 5)])
def test_flux_full_matches_diffusers(flux_pipe, image_factory, width, height, steps):
    image = image_factory(width, height, seed=width)
    ours = actors.Editor(flux_pipe, policies.make("full")).edit(
        image, "make the sky green", seed=7, steps=steps, height=height, width=width)
    ref = _reference(flux_pipe, image, "make the sky green", 7, steps, height=height, width=width,
                     max_area=height * width, _auto_resize=False, guidance_scale=3.5)
    assert ours.pixels.shape == ref.shape == (height, width, 3)
    assert np.abs(ours.pixels - ref).max() <= TOL
    assert all(s.kept == s.total for s in ours.trace) and len(ours.trace) == steps


def test_flux_rounds_sizes_like_diffusers_and_says_so(flux_pipe, image_factory):
    image = image_factory(100, 70)
    ours = actors.Editor(flux_pipe, policies.make("full")).edit(image, "add a hat", steps=1, height=70, width=100)
    assert (ours.width, ours.height) == (96, 64)
    assert any("rounded to 96x64" in n for n in ours.notes)
    # Kontext resizes the source bicubically (TokenDrop's protocol); resize_filter="lanczos" is diffusers' own
    ref = _reference(flux_pipe, image.resize((96, 64), 3), "add a hat", 0, 1, height=64, width=96,
                     max_area=64 * 96, _auto_resize=False)
    assert np.abs(ours.pixels - ref).max() <= TOL
    lanczos = actors.Editor(flux_pipe, policies.make("full")).edit(image, "add a hat", steps=1, height=70, width=100,
                                                                   resize_filter="lanczos")
    ref = _reference(flux_pipe, image.resize((96, 64), 1), "add a hat", 0, 1, height=64, width=96,
                     max_area=64 * 96, _auto_resize=False)
    assert np.abs(lanczos.pixels - ref).max() <= TOL


def test_qwen_full_matches_diffusers_at_its_default_size(qwen_pipe, image_factory):
    # diffusers' Qwen pipeline encodes the source at ~1024² area, so parity is checked at that size.
    image = image_factory(1024, 1024, seed=3)
    ours = actors.Editor(qwen_pipe, policies.make("full")).edit(image, "make it blue", seed=5, steps=2)
    ref = _reference(qwen_pipe, image, "make it blue", 5, 2, true_cfg_scale=4.0, negative_prompt=" ")
    assert (ours.height, ours.width) == ref.shape[:2]
    assert np.abs(ours.pixels - ref).max() <= TOL


def test_flux_text_length_is_diffusers_default_whatever_the_tokenizer_says(flux_pipe, image_factory, monkeypatch):
    """diffusers pads T5 prompts to max_sequence_length=512 even when the tokenizer says less: so do we."""
    monkeypatch.setattr(flux_pipe.tokenizer_2, "model_max_length", 64)
    image = image_factory(64, 64, seed=3)
    ours = actors.Editor(flux_pipe, policies.make("full")).edit(image, "make it blue", seed=1, steps=2,
                                                                 height=64, width=64)
    ref = _reference(flux_pipe, image, "make it blue", 1, 2, height=64, width=64, max_area=64 * 64,
                     _auto_resize=False, guidance_scale=3.5)
    assert np.abs(ours.pixels - ref).max() <= TOL


def test_toy_model_carries_its_defaults_and_matches_diffusers_given_them(image_factory):
    """The shipped toy model says (dropedit.json) it reads 32 T5 tokens at 128x128: with no options our edit
    uses them, and equals diffusers called with the same max_sequence_length; the default matters."""
    pipe = actors.load_pipeline("toy-flux-kontext")
    image = image_factory(128, 128, seed=5)
    ours = actors.Editor(pipe, policies.make("full")).edit(image, "remove the red circle", seed=2, steps=2)
    assert (ours.width, ours.height) == (128, 128)
    call = dict(height=128, width=128, max_area=128 * 128, _auto_resize=False)
    ref = _reference(pipe, image, "remove the red circle", 2, 2, max_sequence_length=32, **call)
    assert np.abs(ours.pixels - ref).max() <= TOL
    at_512 = _reference(pipe, image, "remove the red circle", 2, 2, **call)
    assert np.abs(ours.pixels - at_512).max() > 10 * TOL


def test_toy_model_warns_outside_its_trained_size(image_factory):
    pipe = actors.load_pipeline("toy-flux-kontext")
    result = actors.Editor(pipe, policies.make("full")).edit(image_factory(64, 64), "invert the colors", steps=1,
                                                             height=64, width=64)
    assert any("trained at 128x128 only" in n for n in result.notes)
