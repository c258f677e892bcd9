"""FLUX.2 [dev]: with nothing dropped, our loop reproduces Flux2Pipeline bit for bit (fp32, CPU), with one and
with several reference images, guidance going into the transformer's guidance embedding; every policy and
cache runs on it or is refused with its reason; the cost model prices the real 32 B transformer."""
import inspect
import re

import numpy as np
import pytest
import torch

import actors
import policies
from actors import models

STEPS, SIZE = 2, 64


@pytest.fixture(scope="module")
def dev():
    return actors.load_pipeline("tiny-flux2-dev", device="cpu")


def _reference(pipe, images, prompt, seed, steps, **kwargs):
    return pipe(image=images, prompt=prompt, num_inference_steps=steps, output_type="np",
                generator=torch.Generator("cpu").manual_seed(seed), **kwargs).images[0]


def test_the_tiny_model_is_the_real_classes_with_dev_s_adapter_and_defaults(dev):
    from diffusers import AutoencoderKLFlux2, Flux2Pipeline, Flux2Transformer2DModel
    from transformers import Mistral3ForConditionalGeneration, PixtralProcessor

    from actors.families.flux2.dev_adapter import Flux2DevAdapter
    from actors.loading import protocol_of

    assert type(dev) is Flux2Pipeline and isinstance(dev.transformer, Flux2Transformer2DModel)
    assert dev.transformer.config.guidance_embeds and isinstance(dev.vae, AutoencoderKLFlux2)
    assert isinstance(dev.text_encoder, Mistral3ForConditionalGeneration)
    assert isinstance(dev.tokenizer, PixtralProcessor)
    assert all(not m.training for m in dev.components.values() if isinstance(m, torch.nn.Module))
    assert models.family_of(dev).name == "flux2" and type(actors.adapter_for(dev)) is Flux2DevAdapter
    # the defaults are Flux2Pipeline.__call__'s own, and a run without them (the CLI, a config) gets them
    call = inspect.signature(Flux2Pipeline.__call__).parameters
    assert (Flux2DevAdapter.default_steps, Flux2DevAdapter.default_guidance) == (
        call["num_inference_steps"].default, call["guidance_scale"].default) == (50, 4.0)
    for name in ("tiny-flux2-dev", "flux2-dev"):
        assert protocol_of(name) == {"family": "flux2", "steps": 50, "guidance_scale": 4.0, "resize_filter": "lanczos"}
    assert protocol_of("tiny-flux2-klein")["steps"] == 4


def test_the_prompt_is_the_pipelines_chat_template_padded_to_512(dev):
    from diffusers.pipelines.flux2.pipeline_flux2 import format_input
    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE

    text = dev.tokenizer.apply_chat_template(format_input(["add a hat"], SYSTEM_MESSAGE), add_generation_prompt=False,
                                             tokenize=False)[0]
    assert text == f"<s>[SYSTEM_PROMPT]{SYSTEM_MESSAGE}[/SYSTEM_PROMPT][INST]add a hat[/INST]"
    embeds, ids = dev.encode_prompt("add a hat", device="cpu")
    assert embeds.shape == (1, 512, dev.transformer.config.joint_attention_dim) and ids.shape == (1, 512, 4)


def test_a_saved_copy_loads_by_path_and_encodes_the_same(dev, tmp_path):
    dev.save_pretrained(tmp_path)
    loaded = actors.load_pipeline("tiny-flux2-dev", path=tmp_path, device="cpu")
    assert type(loaded.tokenizer) is type(dev.tokenizer)
    assert len(loaded.tokenizer.tokenizer) == len(dev.tokenizer.tokenizer)
    ours, theirs = (p.encode_prompt("add a hat", device="cpu")[0] for p in (loaded, dev))
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("sizes", [[(96, 64)], [(64, 64), (96, 64), (64, 80)]])
def test_full_matches_diffusers_bit_for_bit(dev, image_factory, sizes):
    images = [image_factory(w, h, seed=i + w) for i, (w, h) in enumerate(sizes)]
    ours = actors.Editor(dev, policies.make("full")).edit(images[0], "make the sky green", seed=7, steps=STEPS,
                                                          references=images[1:])
    ref = _reference(dev, images, "make the sky green", 7, STEPS)
    w, h = sizes[0]
    assert ours.pixels.shape == ref.shape == (h, w, 3)
    diff = float(np.abs(ours.pixels - ref).max())
    print(f"parity max abs difference, {len(images)} reference(s): {diff:.2e}")
    assert np.array_equal(ours.pixels, ref), diff
    total = sum((w // 16) * (h // 16) for w, h in sizes)
    assert all(s.kept == s.total == total for s in ours.trace) and len(ours.trace) == STEPS
    if len(images) > 1:   # the last reference reaches the output
        assert np.abs(_reference(dev, images[:-1], "make the sky green", 7, STEPS) - ref).max() > 1e-4


def test_guidance_goes_into_the_guidance_embedding(dev, image_factory):
    """One transformer call per step whatever the guidance (no CFG); the scale reaches the output."""
    image = image_factory(64, 64, seed=4)
    ours = actors.Editor(dev, policies.make("full")).edit(image, "make it blue", seed=3, steps=STEPS,
                                                          guidance_scale=2.5)
    ref = _reference(dev, [image], "make it blue", 3, STEPS, guidance_scale=2.5)
    assert np.array_equal(ours.pixels, ref)
    assert ours.text_tokens == (512,)   # one call per step
    default = _reference(dev, [image], "make it blue", 3, STEPS)   # guidance 4.0
    assert np.abs(default - ref).max() > 1e-4


# policies set up so that they drop within 2 steps; the others at their defaults
PARAMS = {"random": {"ratio": 0.5}, "tokendrop": {"omega": 0.2, "full_steps": 1},
          "sparse_context": {"keep": 0.5, "warmup_steps": 1}}
# what FLUX.2 cannot run, and why (the family's `unsupported`, the block caches' hooks, RegionE's fitted gammas)
POLICY_REFUSALS = {
    "topi": "needs layer_routing, which model family 'flux2' does not run",
    **{name: "needs query_skip, which model family 'flux2' does not run" for name in ("spotedit", "focus", "regione")}}
CACHE_REFUSALS = {"first-block": "Flux2SingleTransformerBlock returns them as one sequence",
                  "magcache": "Flux2SingleTransformerBlock returns them as one sequence",
                  "velocity-decay": "velocity-decay has no fitted gamma for model family 'flux2'"}


def _refusals(policy, cache) -> list[str]:
    out = [POLICY_REFUSALS[policy]] if policy in POLICY_REFUSALS else []
    declared = policies.make(policy, **PARAMS.get(policy, {})).needs.cache
    if cache is not None and declared is not None:
        out.append("one cache per edit")
    if cache in CACHE_REFUSALS:
        out.append(CACHE_REFUSALS[cache])
    return out


def test_every_policy_and_cache_runs_or_is_refused_with_its_reason(dev, image_factory):
    from actors import caches
    from actors.adapter import EditInputError
    from actors.caches import CacheError
    from policies.base import PolicyError

    image, ran = image_factory(SIZE, SIZE, seed=1), []
    for policy in sorted(policies.REGISTRY):
        for cache in [None, *caches.names()]:
            reasons = _refusals(policy, cache)
            editor = actors.Editor(dev, policies.make(policy, **PARAMS.get(policy, {})))
            if reasons:
                steps_seen = []
                with pytest.raises((EditInputError, CacheError, PolicyError),
                                   match="|".join(map(re.escape, reasons))):
                    editor.edit(image, "make it red", steps=STEPS, cache=cache, on_step=steps_seen.append)
                assert steps_seen == [], (policy, cache)   # refused before the first step
                continue
            result = editor.edit(image, "make it red", steps=STEPS, cache=cache)
            assert len(result.trace) == STEPS and np.isfinite(result.pixels).all(), (policy, cache)
            ran.append((policy, cache))
    assert {p for p, _ in ran} == {"full", "random", "sparse_context", "tokendrop"}
    assert {c for _, c in ran} == {None, "taylorseer"}
    with pytest.raises(PolicyError, match="no default .* for model family 'flux2'"):
        actors.Editor(dev, policies.make("tokendrop")).edit(image, "make it red", steps=STEPS)


def test_the_cost_model_counts_what_the_tiny_dev_transformer_computes(dev):
    """Every nn.Linear's multiply-adds (the guidance embedder's among them) and the two attention matmuls,
    counted on a real call with guidance, equal the FLOP model's call on its config."""
    from costs.flops import arch_of, call_flops

    tr, g = dev.transformer, torch.Generator().manual_seed(0)
    text, noisy, source = 6, 8, 12
    counted = []

    def count(module, args, output):
        counted.append(2.0 * args[0].numel() // module.in_features * module.in_features * module.out_features)

    hooks = [m.register_forward_hook(count) for m in tr.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.no_grad():
            tr(hidden_states=torch.randn(1, noisy + source, 128, generator=g), timestep=torch.tensor([0.5]),
               encoder_hidden_states=torch.randn(1, text, tr.config.joint_attention_dim, generator=g),
               txt_ids=torch.zeros(text, 4), img_ids=torch.zeros(noisy + source, 4), guidance=torch.tensor([4.0]))
    finally:
        for hook in hooks:
            hook.remove()
    arch = arch_of(tr)
    assert arch.guidance
    assert call_flops(arch, text, noisy, source).linear == pytest.approx(sum(counted), rel=1e-9)


def test_the_cost_model_prices_the_real_32b_transformer():
    """flux2-dev (and its tiny copy) is priced as FLUX.2-dev's config: 8 dual + 48 single blocks of width
    48 x 128 = 6144, 512 text tokens, one call per step. By hand, each block holds 13·d² weights per stream
    (q, k, v, out: 4·d²; the SwiGLU MLP d -> 2·3d -> 3d -> d: 9·d²; a single block fuses the same 13·d²),
    so the blocks are (2·8 + 48)·13·d² = 31.4 B of the 32.2 B parameters."""
    from diffusers import Flux2Transformer2DModel

    import costs
    from actors.families.flux2.architecture import FLUX2_DEV_32B
    from costs.flops import call_flops

    config = {k: v for k, v in FLUX2_DEV_32B.transformer.items() if not k.startswith("_")}
    with torch.device("meta"):
        counted = sum(p.numel() for p in Flux2Transformer2DModel(**config).parameters())
    assert counted == pytest.approx(FLUX2_DEV_32B.params, rel=1e-3) and counted == pytest.approx(32e9, rel=0.02)
    d = 6144
    assert (2 * 8 + 48) * 13 * d * d == pytest.approx(counted, rel=0.03)
    for name in ("flux2-dev", "tiny-flux2-dev"):
        priced = costs.for_model(name)
        assert priced.name == "FLUX.2-dev" and priced.text() == (512,)
        assert (priced.arch.dim, priced.arch.dual_layers, priced.arch.single_layers) == (d, 8, 48)
        assert priced.arch.guidance and priced.arch.gated_mlp and priced.arch.text_dim == 15360
    # one 1024² call with one reference: 512 + 4096 + 4096 tokens, each through 56 blocks of 2·13·d² FLOPs,
    # and the two attention matmuls (2·2·n²·d per block); the embedders, modulation and head add < 1 %
    n = 512 + 4096 + 4096
    hand = 56 * (n * 2 * 13 * d * d + 4 * n * n * d)
    flops = call_flops(costs.for_model("flux2-dev").arch, 512, 4096, 4096)
    assert flops.attention == 56 * 4 * n * n * d and flops.total == pytest.approx(hand, rel=0.01)
