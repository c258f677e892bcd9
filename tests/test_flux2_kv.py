"""FLUX.2 [klein] KV: our loop on a Flux2KleinKVPipeline equals diffusers' own KV pipeline (the reference K/V
computed on the first call, reused after), composes that reuse with reference-token dropping, prices it, and runs
BFL's pipeline as a peer."""
import numpy as np
import pytest
import torch

import actors
import policies
from actors import models

TOL = 1e-3   # max abs difference on output pixels in [0, 1], as tests/test_flux2.py
PROMPT = "make the sky green"


@pytest.fixture(scope="module")
def kv():
    return actors.load_pipeline("tiny-flux2-klein-kv", device="cpu")


def _diffusers(pipe, images, seed, steps):
    return pipe(image=images, prompt=PROMPT, num_inference_steps=steps, output_type="np",
                generator=torch.Generator("cpu").manual_seed(seed)).images[0]


def test_the_tiny_kv_model_is_the_kv_pipeline_of_the_flux2_family(kv):
    from diffusers import Flux2KleinKVPipeline
    from diffusers.models.transformers.transformer_flux2 import Flux2KVAttnProcessor

    assert type(kv) is Flux2KleinKVPipeline and models.family_of(kv).name == "flux2"
    assert isinstance(kv.transformer.transformer_blocks[0].attn.processor, Flux2KVAttnProcessor)
    assert models.model("flux2-klein-kv").architecture.name == "FLUX.2-klein-9B"


@pytest.mark.parametrize("sizes,steps", [([(96, 64)], 3), ([(64, 64), (96, 64), (64, 80)], 3)])
def test_full_matches_the_kv_pipeline_and_differs_from_plain_klein(kv, image_factory, sizes, steps):
    from diffusers import Flux2KleinPipeline

    images = [image_factory(w, h, seed=i + w) for i, (w, h) in enumerate(sizes)]
    ours = actors.Editor(kv, policies.make("full")).edit(images[0], PROMPT, seed=7, steps=steps,
                                                         references=images[1:])
    ref = _diffusers(kv, images, 7, steps)
    diff = float(np.abs(ours.pixels - ref).max())
    print(f"KV parity max abs difference, {len(images)} reference(s): {diff:.2e}")
    assert diff <= TOL
    # the KV computation is not klein's (references attend to references only, modulated at t = 0)
    plain = Flux2KleinPipeline(**kv.components)
    assert np.abs(_diffusers(plain, images, 7, steps) - ref).max() > 100 * max(diff, 1e-6)
    total = sum((w // 16) * (h // 16) for w, h in sizes)
    noisy = ours.trace[0].noisy
    assert [(s.active, s.keys) for s in ours.trace] == [(None, None)] + [(noisy, noisy + total)] * (steps - 1)
    assert ours.source_cached and "reference K/V computed in 1 call(s), read from the cache in 2" in ours.notes


def test_reference_dropping_reads_the_kept_rows_of_the_cache_or_extracts_again(kv, image_factory):
    image, refs = image_factory(64, 64, seed=1), [image_factory(64, 64, seed=2)]
    after_full = actors.Editor(kv, policies.make("random", ratio=0.5, full_steps=1)).edit(
        image, PROMPT, steps=3, references=refs)
    assert [s.kept for s in after_full.trace] == [32, 16, 16]
    assert [s.keys for s in after_full.trace] == [None, 16 + 16, 16 + 16]   # 16 noisy + the kept references
    assert "reference K/V computed in 1 call(s), read from the cache in 2" in after_full.notes
    # a fresh random half at every step is never inside the first step's half: every call extracts
    fresh = actors.Editor(kv, policies.make("random", ratio=0.5, full_steps=0)).edit(
        image, PROMPT, steps=3, references=refs)
    assert "reference K/V computed in 3 call(s), read from the cache in 0" in fresh.notes
    assert all(s.active is None for s in fresh.trace)
    full = actors.Editor(kv, policies.make("full")).edit(image, PROMPT, steps=3, references=refs)
    assert np.abs(after_full.pixels - full.pixels).max() > 0   # dropped keys change the edit


def test_the_cost_model_prices_cached_calls_without_the_reference_tokens(kv, image_factory):
    from costs.flops import arch_of, call_flops, predicted_speedup
    from costs.ideal_speedup import real_speedup

    image, refs = image_factory(64, 64, seed=1), [image_factory(64, 64, seed=2), image_factory(64, 64, seed=3)]
    result = actors.Editor(kv, policies.make("full")).edit(image, PROMPT, steps=4, references=refs)
    arch, (text,) = arch_of(kv.transformer), result.text_tokens
    # by hand: one full call, then three calls of the text and 16 noisy tokens against 16 + 48 image keys
    full = call_flops(arch, text, 16, 48).total
    cached = call_flops(arch, text, 16, 48, active=16, keys=64, source_cached=True).total
    own = predicted_speedup(arch, result.trace, result.text_tokens, result.source_cached)
    assert own == pytest.approx(4 * full / (full + 3 * cached)) and own > 1.0
    # priced on FLUX.2-klein-9B at 1024² (4096 noisy, 3 x 4096 reference tokens): most of a step is gone
    assert real_speedup(result, "flux2-klein-kv") > 2.0


def test_attention_statistics_are_refused_on_the_kv_pipeline_only(kv, image_factory):
    from actors.adapter import EditInputError
    from jobs.preflight import _family_refusal

    policy = policies.make("sparse_context", strategy="attention", keep=0.25, warmup_steps=1)
    with pytest.raises(EditInputError, match="needs attention_stats, which Flux2KleinKVPipeline does not run"):
        actors.Editor(kv, policy).edit(image_factory(64, 64), PROMPT, steps=2, references=[image_factory(64, 64)])
    assert "Flux2KleinKVPipeline" in _family_refusal("tiny-flux2-klein-kv", policy)
    assert _family_refusal("tiny-flux2-klein", policy) is None


def test_a_call_cache_composes_with_the_reference_kv(kv, image_factory):
    result = actors.Editor(kv, policies.make("full")).edit(image_factory(64, 64, seed=6), PROMPT, steps=4,
                                                           cache="taylorseer:interval=2")
    assert len(result.trace) == 4 and result.cache_params["name"] == "taylorseer"
    assert sum(c.skipped_call for s in result.trace for c in s.cache_calls) >= 1


def test_the_peer_runs_diffusers_kv_pipeline_and_leaves_klein_as_it_was(kv, image_factory):
    from actors import peers

    image = image_factory(64, 64, seed=9)
    peer = peers.make("flux2-klein-kv")
    result = peer.edit(kv, image, PROMPT, seed=3, steps=3, height=64, width=64)
    ours = actors.Editor(kv, policies.make("full")).edit(image, PROMPT, seed=3, steps=3, height=64, width=64)
    assert np.abs(result.pixels - ours.pixels).max() <= TOL and result.params["kv_checkpoint"] is True
    klein = actors.load_pipeline("tiny-flux2-klein", device="cpu")
    before = {k: type(p) for k, p in klein.transformer.attn_processors.items()}
    on_klein = peer.edit(klein, image, PROMPT, seed=3, steps=3, height=64, width=64)
    assert {k: type(p) for k, p in klein.transformer.attn_processors.items()} == before
    assert on_klein.params["kv_checkpoint"] is False and any("not trained" in n for n in on_klein.notes)
