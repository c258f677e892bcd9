"""The tiny pipelines run end to end through the real diffusers pipelines, offline and deterministically.

Qwen edit calls always VAE-encode the source at ~1 megapixel (`calculate_dimensions`), so this file makes only
three Qwen pipeline calls in all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, FluxKontextPipeline, QwenImageEditPipeline, QwenImageEditPlusPipeline
from PIL import Image

from actors.tiny_models import build_tiny_flux_kontext, build_tiny_qwen_image_edit
from actors.tiny_tokenizers import QWEN_SPECIAL_TOKENS

# Round trips compare outputs with a tolerance: safetensors loads weights at unaligned addresses, which sends CPU
# matmuls down other SIMD paths (~5e-7 in the latents, ~3e-6 in Qwen pixels) although the weights are bit-identical.
ROUND_TRIP_ATOL = 1e-4


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _generator() -> torch.Generator:
    return torch.Generator("cpu").manual_seed(0)


def _quiet(pipe: DiffusionPipeline) -> DiffusionPipeline:
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _assert_same_weights(a: DiffusionPipeline, b: DiffusionPipeline) -> None:
    for name, component in a.components.items():
        if isinstance(component, torch.nn.Module):
            sd_a, sd_b = component.state_dict(), getattr(b, name).state_dict()
            assert sd_a.keys() == sd_b.keys(), name
            for key in sd_a:
                assert torch.equal(sd_a[key], sd_b[key]), f"{name}.{key}"


BUILDERS: dict[str, Callable[[int], DiffusionPipeline]] = {
    "flux_kontext": lambda seed: build_tiny_flux_kontext(seed),
    "qwen_edit": lambda seed: build_tiny_qwen_image_edit(seed),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_same_seed_same_weights_and_global_rng_untouched(name: str) -> None:
    rng_before = torch.random.get_rng_state()
    first, second, other = BUILDERS[name](0), BUILDERS[name](0), BUILDERS[name](1)
    assert torch.equal(rng_before, torch.random.get_rng_state())
    _assert_same_weights(first, second)
    with pytest.raises(AssertionError):
        _assert_same_weights(first, other)
    for module in first.components.values():
        if isinstance(module, torch.nn.Module):
            assert module.dtype == torch.float32
            assert not module.training


def test_vae_scale_factors_are_8() -> None:
    assert build_tiny_flux_kontext().vae_scale_factor == 8
    qwen = build_tiny_qwen_image_edit()
    assert qwen.vae_scale_factor == 8
    assert qwen.transformer.config.in_channels == 4 * qwen.vae.config.z_dim == 64


@pytest.mark.parametrize("plus", [False, True])
def test_qwen_template_system_prefix_is_exactly_drop_idx_tokens(plus: bool) -> None:
    pipe = build_tiny_qwen_image_edit(plus=plus)
    tokenizer = pipe.tokenizer
    ids = tokenizer(pipe.prompt_template_encode.format("make it red")).input_ids
    drop = pipe.prompt_template_encode_start_idx
    # The pipeline drops the system prompt by count; with the real tokenizer it ends at "<|im_start|>user\n".
    assert tokenizer.convert_ids_to_tokens(ids[drop - 3 : drop]) == ["<|im_start|>", "user", "Ċ"]
    for token in QWEN_SPECIAL_TOKENS:
        assert tokenizer.convert_ids_to_tokens(tokenizer(token).input_ids) == [token]


def test_flux_kontext_runs_and_round_trips(tmp_path: Path) -> None:
    pipe = _quiet(build_tiny_flux_kontext())
    call = dict(
        image=_image(96, 64),
        prompt="make it red",
        num_inference_steps=2,
        height=64,
        width=96,
        max_area=64 * 96,
        _auto_resize=False,
    )
    out = pipe(**call, generator=_generator()).images[0]
    assert out.size == (96, 64)

    pipe.save_pretrained(tmp_path)
    loaded = _quiet(FluxKontextPipeline.from_pretrained(tmp_path, local_files_only=True))
    _assert_same_weights(pipe, loaded)
    for prompt in ("make it red", "A Zebra über the hill!"):
        assert pipe.tokenizer(prompt).input_ids == loaded.tokenizer(prompt).input_ids
        assert pipe.tokenizer_2(prompt).input_ids == loaded.tokenizer_2(prompt).input_ids
    before = pipe(**call, generator=_generator(), output_type="np").images
    after = loaded(**call, generator=_generator(), output_type="np").images
    np.testing.assert_allclose(after, before, atol=ROUND_TRIP_ATOL, rtol=0)


def test_qwen_edit_runs_and_round_trips(tmp_path: Path) -> None:
    pipe = _quiet(build_tiny_qwen_image_edit())
    call = dict(image=_image(96, 64), prompt="make it red", num_inference_steps=2, true_cfg_scale=1.0)
    before = pipe(**call, generator=_generator(), output_type="np").images
    # The source is resized to ~1024*1024 area at its 3:2 ratio, rounded to multiples of 32; the output follows.
    assert before.shape == (1, 832, 1248, 3)

    pipe.save_pretrained(tmp_path)
    loaded = _quiet(QwenImageEditPipeline.from_pretrained(tmp_path, local_files_only=True))
    _assert_same_weights(pipe, loaded)
    assert loaded.processor.image_processor.size.longest_edge == pipe.processor.image_processor.size.longest_edge
    template = pipe.prompt_template_encode.format("make it red")
    assert loaded.processor.tokenizer(template).input_ids == pipe.tokenizer(template).input_ids
    after = loaded(**call, generator=_generator(), output_type="np").images
    np.testing.assert_allclose(after, before, atol=ROUND_TRIP_ATOL, rtol=0)


def test_qwen_edit_plus_takes_an_image_list() -> None:
    pipe = _quiet(build_tiny_qwen_image_edit(plus=True))
    assert isinstance(pipe, QwenImageEditPlusPipeline)
    # The output size follows the LAST image (square here); each image is VAE-encoded at its own ~1 MP size.
    images = [_image(96, 64, seed=0), _image(64, 64, seed=1)]
    out = pipe(image=images, prompt="make it red", num_inference_steps=2, true_cfg_scale=1.0, generator=_generator())
    assert out.images[0].size == (1024, 1024)
