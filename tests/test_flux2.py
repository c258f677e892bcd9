"""FLUX.2 [klein]: with nothing dropped, our loop reproduces Flux2KleinPipeline (fp32, CPU), with one and with
several reference images; dropping reference tokens gathers them with their 4-axis RoPE ids."""
import numpy as np
import pytest
import torch

import actors
import policies
from actors import models

TOL = 1e-3   # max abs difference on output pixels in [0, 1], as tests/test_engine_parity.py


@pytest.fixture(scope="module")
def klein():
    return actors.load_pipeline("tiny-flux2-klein", device="cpu")


def _reference(pipe, images, prompt, seed, steps, **kwargs):
    return pipe(image=images, prompt=prompt, num_inference_steps=steps, output_type="np",
                generator=torch.Generator("cpu").manual_seed(seed), **kwargs).images[0]


def test_the_tiny_model_is_the_real_classes_and_its_family(klein):
    from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Transformer2DModel
    from transformers import Qwen3ForCausalLM

    assert type(klein) is Flux2KleinPipeline and klein.config.is_distilled
    assert isinstance(klein.transformer, Flux2Transformer2DModel) and isinstance(klein.vae, AutoencoderKLFlux2)
    assert isinstance(klein.text_encoder, Qwen3ForCausalLM)
    assert models.family_of(klein).name == "flux2"
    assert len(klein.transformer.config.axes_dims_rope) == 4


@pytest.mark.parametrize("sizes,steps", [([(96, 64)], 2), ([(64, 64), (96, 64), (64, 80)], 3)])
def test_full_matches_diffusers(klein, image_factory, sizes, steps):
    images = [image_factory(w, h, seed=i + w) for i, (w, h) in enumerate(sizes)]
    ours = actors.Editor(klein, policies.make("full")).edit(images[0], "make the sky green", seed=7, steps=steps,
                                                            references=images[1:])
    ref = _reference(klein, images, "make the sky green", 7, steps)
    w, h = sizes[0]
    assert ours.pixels.shape == ref.shape == (h, w, 3)
    diff = float(np.abs(ours.pixels - ref).max())
    print(f"parity max abs difference, {len(images)} reference(s): {diff:.2e}")
    assert diff <= TOL, diff
    total = sum((w // 16) * (h // 16) for w, h in sizes)
    assert all(s.kept == s.total == total for s in ours.trace) and len(ours.trace) == steps
    # the last reference reaches the output (the tiny random model barely listens: its effect is small, but
    # far above the parity error)
    if len(images) > 1:
        fewer = _reference(klein, images[:-1], "make the sky green", 7, steps)
        assert np.abs(fewer - ref).max() > 100 * max(diff, 1e-6)


def test_a_reference_the_pipeline_refuses_is_refused_before_any_model_work(klein, image_factory):
    from actors.adapter import EditInputError

    with pytest.raises(EditInputError, match="reference 2.*at least 64px"):
        actors.Editor(klein, policies.make("full")).edit(image_factory(64, 64), "add a hat", steps=1,
                                                         references=[image_factory(48, 80)])
