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


def _inputs(klein, image_factory, n=3):
    from actors.families.flux2 import FLUX2

    images = [image_factory(64, 64, seed=s) for s in range(n)]
    adapter = FLUX2.adapter(klein)
    inputs = adapter.prepare(images, "add a hat", seed=1, steps=2, guidance_scale=None, height=None, width=None)
    return adapter, inputs


def test_references_sit_at_their_time_offsets_and_their_ids_travel_with_them(klein, image_factory):
    adapter, inputs = _inputs(klein, image_factory)
    ids = inputs.cond["source_ids"]
    assert ids[:, 0].unique().tolist() == [10, 20, 30] and (inputs.cond["latent_ids"][:, 0] == 0).all()
    z, t = inputs.latents, inputs.timesteps[0]
    with torch.no_grad():
        full = adapter.velocity(inputs, z, t, None)
        shuffled = adapter.velocity(inputs, z, t, torch.randperm(ids.shape[0], generator=torch.Generator().manual_seed(0)))
        half = adapter.velocity(inputs, z, t, torch.arange(0, ids.shape[0], 2))
    # a permutation of the reference tokens is the same context when each keeps its RoPE row
    assert torch.allclose(full, shuffled, atol=1e-5)
    assert (full - half).abs().max() > 1e-4


def test_statistics_processors_see_the_stock_qkv(klein):
    """q, k, v as the statistics processors recompute them give the stock processors' outputs."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    from actors.families.flux2.attention import _rotate, dual_qkv, single_qkv

    tr, g = klein.transformer, torch.Generator().manual_seed(0)
    dim, text, image = tr.inner_dim, 5, 7
    ids = torch.randint(0, 9, (text + image, 4), generator=g)
    emb = tr.pos_embed(ids)
    hs, ehs = torch.randn(1, image, dim, generator=g), torch.randn(1, text, dim, generator=g)
    with torch.no_grad():
        attn = tr.transformer_blocks[0].attn
        q, k, v = dual_qkv(attn, hs, ehs)
        out = dispatch_attention_fn(_rotate(q, emb), _rotate(k, emb), v).flatten(2, 3)
        stock_img, stock_txt = attn.processor(attn, hs, ehs, None, emb)
        assert torch.allclose(attn.to_out[0](out[:, text:]), stock_img, atol=1e-5)
        assert torch.allclose(attn.to_add_out(out[:, :text]), stock_txt, atol=1e-5)
        attn = tr.single_transformer_blocks[0].attn
        joint = torch.cat([ehs, hs], dim=1)
        q, k, v = single_qkv(attn, joint)
        out = dispatch_attention_fn(_rotate(q, emb), _rotate(k, emb), v).flatten(2, 3)
        mlp = attn.to_qkv_mlp_proj(joint)[..., 3 * attn.inner_dim:]
        mine = attn.to_out(torch.cat([out, attn.mlp_act_fn(mlp)], dim=-1))
        assert torch.allclose(mine, attn.processor(attn, joint, None, emb), atol=1e-5)


def test_reference_dropping_policies_run_and_the_unjustified_defaults_refuse(klein, image_factory):
    from policies.base import PolicyError

    image, refs = image_factory(64, 64, seed=1), [image_factory(64, 64, seed=2)]
    editor = actors.Editor(klein, policies.make("random", ratio=0.5))
    result = editor.edit(image, "make it red", steps=3, references=refs)
    assert [s.kept for s in result.trace] == [16, 16, 16] and result.trace[0].total == 32
    attention = actors.Editor(klein, policies.make("sparse_context", strategy="attention", keep=0.25,
                                                   warmup_steps=1))
    result = attention.edit(image, "make it red", steps=3, references=refs)
    assert [s.kept for s in result.trace] == [32, 8, 8]   # a quarter of each reference after one full step
    tokendrop = actors.Editor(klein, policies.make("tokendrop", omega=0.2, full_steps=1)).edit(
        image, "make it red", steps=3)
    assert tokendrop.trace[0].kept == 16 and tokendrop.policy_params["omega"] == 0.2
    with pytest.raises(PolicyError, match="no default .* for model family 'flux2'"):
        actors.Editor(klein, policies.make("tokendrop")).edit(image, "make it red", steps=2)


def test_policies_whose_mechanisms_it_cannot_run_are_refused_with_the_reason(klein, image_factory):
    """SpotEdit (partial attention) and ToPi's mode B (layer routing) are refused before the first step, in
    the editor and in a run's preflight; TokenDrop, which needs neither, passes preflight."""
    from actors.adapter import EditInputError
    from jobs.preflight import check_policies
    from pipeline.config import expand_run, parse_config

    image = image_factory(64, 64, seed=1)
    for policy, mechanism in ((policies.make("spotedit", tau=0.2), "query_skip"),
                              (policies.make("topi", layers=[1], tau=0.5), "layer_routing")):
        with pytest.raises(EditInputError, match=f"policy '{policy.name}' needs {mechanism}, which model family "
                                                 "'flux2' does not run: "):
            actors.Editor(klein, policy).edit(image, "make it red", steps=2)
    raw = {"input": "x.jsonl", "output": "out", "models": [{"name": "tiny-flux2-klein"}], "resolutions": [64],
           "policies": [{"name": "full"}, {"name": "tokendrop", "omega": 0.2}]}
    check_policies(expand_run(parse_config(raw)).configurations)
    raw["policies"].append({"name": "spotedit", "tau": 0.2})
    with pytest.raises(ValueError, match="needs query_skip, which model family 'flux2' does not run"):
        check_policies(expand_run(parse_config(raw)).configurations)


def test_the_cost_model_counts_what_the_flux2_transformer_computes(klein):
    """Every nn.Linear's multiply-adds and the two attention matmuls, counted on a real call of the tiny
    transformer, equal the FLOP model's call on its config; flux2-klein is priced as the 4B config."""
    import costs
    from costs.flops import arch_of, call_flops

    tr, g = klein.transformer, torch.Generator().manual_seed(0)
    text, noisy, source = 6, 8, 12
    counted = []

    def count(module, args, output):
        counted.append(2.0 * args[0].numel() // module.in_features * module.in_features * module.out_features)

    hooks = [m.register_forward_hook(count) for m in tr.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.no_grad():
            tr(hidden_states=torch.randn(1, noisy + source, 128, generator=g), timestep=torch.tensor([0.5]),
               encoder_hidden_states=torch.randn(1, text, tr.config.joint_attention_dim, generator=g),
               txt_ids=torch.zeros(text, 4), img_ids=torch.zeros(noisy + source, 4), guidance=None)
    finally:
        for hook in hooks:
            hook.remove()
    flops = call_flops(arch_of(tr), text, noisy, source)
    n, layers = text + noisy + source, tr.config.num_layers + tr.config.num_single_layers
    assert flops.linear == pytest.approx(sum(counted), rel=1e-9)
    assert flops.attention == 4.0 * n * n * tr.inner_dim * layers
    priced = costs.edit_cost("flux2-klein", 1024, 1024, 4, 1.0)
    assert priced.architecture == "FLUX.2-klein-4B" and priced.text == (512,) and priced.calls_per_step == 1


def test_dropedit_edit_runs_it_with_its_protocol(tmp_path, image_factory):
    import json
    import subprocess
    import sys

    src, out = tmp_path / "in.png", tmp_path / "out.png"
    image_factory(96, 64).save(src)
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "edit", "--model", "tiny-flux2-klein", "--policy",
                           "random", "--image", str(src), "--instruction", "make it red", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["steps"] == 4 and line["guidance_scale"] == 1.0 and line["keep_ratio_mean"] == 0.5
    assert (line["width"], line["height"]) == (96, 64) and out.exists()


def test_a_non_distilled_checkpoint_runs_the_pipelines_cfg(klein, image_factory):
    """klein base (is_distilled=False) at guidance > 1: two calls per step, negative prompt "", as diffusers."""
    from diffusers import Flux2KleinPipeline

    base = Flux2KleinPipeline(**klein.components, is_distilled=False)
    image = image_factory(64, 64, seed=4)
    ours = actors.Editor(base, policies.make("full")).edit(image, "make it blue", seed=3, steps=2, guidance_scale=4.0)
    ref = _reference(base, [image], "make it blue", 3, 2, guidance_scale=4.0)
    assert np.abs(ours.pixels - ref).max() <= TOL
    distilled = _reference(klein, [image], "make it blue", 3, 2, guidance_scale=4.0)   # guidance ignored
    assert np.abs(distilled - ref).max() > 100 * max(float(np.abs(ours.pixels - ref).max()), 1e-6)


def test_block_caches_refuse_its_one_sequence_blocks_and_the_call_cache_runs(klein, image_factory):
    from actors.caches import CacheError

    image = image_factory(64, 64, seed=6)
    for cache in ("first-block", "magcache"):
        with pytest.raises(CacheError, match="Flux2SingleTransformerBlock returns them as one sequence"):
            actors.Editor(klein, policies.make("full")).edit(image, "make it red", steps=4, cache=cache)
    result = actors.Editor(klein, policies.make("full")).edit(image, "make it red", steps=4, cache="taylorseer")
    assert len(result.trace) == 4 and result.cache_params["name"] == "taylorseer"
