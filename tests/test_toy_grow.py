"""Growing a toy transformer (`finetune.toy_grow`): the grown model computes the small one's output, its copy
heads attend to the reference token at their own position (measured on a real toy input), the toy config's
`grow` section, and the recipe pilot's options (`studies.toy.recipe_pilot`)."""
from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch

from finetune.toy_grow import grow_transformer
from finetune.toy_source import batch_arrays, encode_batch
from toy.data import vocabulary
from toy.model import T5_LENGTH, ToyModelConfig, build_toy_flux_kontext

TINY = dict(image_size=64, num_layers=1, num_single_layers=2, num_attention_heads=2, attention_head_dim=32,
            axes_dims_rope=(8, 12, 12), vae_channels=(8, 8, 8, 8), vae_groups=4, words=tuple(vocabulary()))


@pytest.fixture(scope="module")
def tiny():
    pipe = build_toy_flux_kontext(ToyModelConfig(**TINY))
    pipe.transformer.eval()
    return pipe


def _inputs(pipe, n: int = 2, size: int = 64, sigma: float = 0.6) -> dict:
    """A real toy batch as the transformer sees it in training (noisy target + reference tokens)."""
    from finetune.flow_matching import image_ids

    b = encode_batch(pipe, *batch_arrays(1, 0, n, size), T5_LENGTH)
    noise = torch.randn(b.z_tgt.shape, generator=torch.Generator().manual_seed(0))
    z_t = (1 - sigma) * b.z_tgt + sigma * noise
    noisy, source = image_ids(pipe, size, b.z_tgt.device)
    return {"hidden_states": torch.cat([z_t, b.z_src], dim=1), "timestep": torch.full((n,), sigma),
            "pooled_projections": b.pooled, "encoder_hidden_states": b.prompt_embeds, "txt_ids": b.text_ids,
            "img_ids": torch.cat([noisy, source], dim=0), "return_dict": False}


@pytest.mark.parametrize("copy_heads", [False, True])
def test_grown_model_computes_the_small_ones_output(tiny, copy_heads):
    big = grow_transformer(tiny.transformer, 3, 5, copy_heads=copy_heads, seed=1)
    assert (len(big.transformer_blocks), len(big.single_transformer_blocks)) == (3, 5)
    assert (big.config.num_layers, big.config.num_single_layers) == (3, 5) and not big.training
    inputs = _inputs(tiny)
    with torch.no_grad():
        want, got = tiny.transformer(**inputs)[0], big(**inputs)[0]
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
    small = tiny.transformer.state_dict()
    assert all(torch.equal(big.state_dict()[k], v) for k, v in small.items())   # every shared weight copied
    gate = big.transformer_blocks[2].norm1.linear
    size = gate.out_features // 6
    assert gate.weight[2 * size:3 * size].abs().max() == 0 and gate.weight[5 * size:].abs().max() == 0
    assert gate.weight[:2 * size].abs().max() > 0   # shifts and scales stay random


def test_new_blocks_are_seeded_and_growth_never_shrinks(tiny):
    a, b = (grow_transformer(tiny.transformer, 2, 2, seed=s) for s in (5, 5))
    c = grow_transformer(tiny.transformer, 2, 2, seed=6)
    key = "transformer_blocks.1.ff.net.0.proj.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])
    with pytest.raises(ValueError, match="cannot hold"):
        grow_transformer(tiny.transformer, 0, 2)


def _attention_on_own_reference(model, block_index: int, inputs: dict) -> torch.Tensor:
    """Per noisy token (mean over batch and heads): the attention weight, computed here from the block's q and
    k after RoPE, on the reference token at the same (h, w)."""
    from diffusers.models.embeddings import apply_rotary_emb

    seen = {}
    block = model.transformer_blocks[block_index]
    hook = block.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    with torch.no_grad():
        model(**inputs)
        hook.remove()
        attn, temb, rope = block.attn, seen["temb"], seen["image_rotary_emb"]
        x = block.norm1(seen["hidden_states"], emb=temb)[0]
        c = block.norm1_context(seen["encoder_hidden_states"], emb=temb)[0]

        def heads(t):
            return t.unflatten(-1, (-1, attn.head_dim))

        q = torch.cat([attn.norm_added_q(heads(attn.add_q_proj(c))), attn.norm_q(heads(attn.to_q(x)))], dim=1)
        k = torch.cat([attn.norm_added_k(heads(attn.add_k_proj(c))), attn.norm_k(heads(attn.to_k(x)))], dim=1)
        q, k = apply_rotary_emb(q, rope, sequence_dim=1), apply_rotary_emb(k, rope, sequence_dim=1)
        weights = torch.softmax(torch.einsum("bshd,bthd->bhst", q, k) / math.sqrt(attn.head_dim), dim=-1)
    text, n = c.shape[1], x.shape[1] // 2
    rows = torch.arange(n)
    return weights[:, :, text + rows, text + n + rows].mean(dim=(0, 1))


def test_copy_heads_attend_to_the_reference_at_their_own_position():
    """The shipped v2 grown to 4 dual + 8 single blocks, on held-out 256 px records (16x16 tokens)."""
    import actors

    v2 = actors.load_pipeline("toy-flux-kontext-v2", device="cpu", dtype=torch.float32)
    v2.transformer.eval()
    inputs = _inputs(v2, n=2, size=256)
    big = grow_transformer(v2.transformer, 4, 8, copy_heads=True)
    with torch.no_grad():
        assert torch.allclose(big(**inputs)[0], v2.transformer(**inputs)[0], atol=1e-5)
    for index in (2, 3):
        mass = _attention_on_own_reference(big, index, inputs)
        assert mass.mean() > 0.9 and mass.min() > 0.5, (float(mass.mean()), float(mass.min()))
    plain = _attention_on_own_reference(grow_transformer(v2.transformer, 4, 8), 2, inputs)
    assert plain.mean() < 0.1   # a random block does not: the init does it


def test_config_grows_a_smaller_saved_pipeline_only_when_asked(tmp_path, tiny):
    from finetune.toy_config import ToyTrainConfig
    from finetune.toy_init import load_init_pipeline

    tiny.save_pretrained(tmp_path / "small")
    model = {**TINY, "num_layers": 2, "num_single_layers": 3}
    cfg = ToyTrainConfig.model_validate({"init_from": str(tmp_path / "small"), "model": model,
                                         "grow": {"copy_heads": True, "seed": 2}})
    assert cfg.grow.copy_heads and cfg.grow.seed == 2
    pipe = load_init_pipeline(str(tmp_path / "small"), ToyModelConfig(**model), cfg.grow)
    assert (pipe.transformer.config.num_layers, pipe.transformer.config.num_single_layers) == (2, 3)
    assert torch.equal(pipe.transformer.transformer_blocks[1].attn.to_q.bias, torch.ones(64))   # copy head
    with pytest.raises(ValueError, match="is not the config's model"):
        load_init_pipeline(str(tmp_path / "small"), ToyModelConfig(**model))
    with pytest.raises(ValueError, match="is not the config's model"):   # grow changes block counts only
        load_init_pipeline(str(tmp_path / "small"), ToyModelConfig(**{**model, "num_attention_heads": 1}),
                           cfg.grow)
    with pytest.raises(ValueError, match="grow needs init_from"):
        ToyTrainConfig.model_validate({"model": model, "grow": {}})
    with pytest.raises(ValueError, match="exclude each other"):
        ToyTrainConfig.model_validate({"init_from": str(tmp_path / "small"), "grow": {}, "lora_rank": 2})


def test_a_grown_run_resumes_from_its_own_checkpoint(tmp_path, tiny):
    """`start` grows the saved pipeline, then restores the run's checkpoint weights over the grown model."""
    from finetune.toy_config import ToyTrainConfig
    from finetune.toy_init import start

    tiny.save_pretrained(tmp_path / "small")
    model = {**TINY, "num_layers": 2, "num_single_layers": 3}
    cfg = ToyTrainConfig.model_validate({"init_from": str(tmp_path / "small"), "model": model, "grow": {}})
    trained = grow_transformer(tiny.transformer, 2, 3, seed=9).state_dict()
    trained = {k: v + 0.01 for k, v in trained.items()}
    (tmp_path / "ckpt").mkdir()
    torch.save({"phase": "transformer", "step": 3, "log": [], "wall_s": 1.0, "vae_stats": None, "val_sweep": None,
                "recent": [], "resumed_at": [], "weights": trained, "vae": tiny.vae.state_dict()},
               tmp_path / "ckpt" / "state.pt")

    class Checkpoint:
        @contextlib.contextmanager
        def as_directory(self):
            yield str(tmp_path / "ckpt")

    pipe, lora, state, saved = start(cfg, ToyModelConfig(**model), Checkpoint())
    assert not lora and state["step"] == 3 and state["resumed_at"] == [3]
    assert all(torch.equal(pipe.transformer.state_dict()[k], v) for k, v in trained.items())


def test_pilot_options_parse():
    from studies.toy.recipe_pilot import V2_MIX, parse_args

    args = parse_args(["--grow", "4,8", "--copy-heads", "--train-text-encoders", "--categories", "v2",
                       "--data-seed", "4", "--data-start", "0", "--lr", "1.5e-4", "--warmup", "15"])
    assert args.grow == (4, 8) and args.copy_heads and args.train_text_encoders and args.categories == V2_MIX
    assert (args.data_seed, args.data_start, args.lr, args.warmup, args.threads) == (4, 0, 1.5e-4, 15, 1)
    default = parse_args([])
    assert (default.grow, default.copy_heads, default.train_text_encoders, default.categories) == (None, False,
                                                                                                  False, None)
    for bad in (["--grow", "4"], ["--copy-heads"], ["--categories", "recolor,spin"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_pilot_grows_and_trains_the_text_encoders(monkeypatch, tmp_path):
    """2 tiny steps with every new option: the text encoders move, the grown model is scored and saved; a
    second call with the same --out is skipped."""
    import actors
    from studies.toy import recipe_pilot

    pipe = build_toy_flux_kontext(ToyModelConfig(**TINY))
    monkeypatch.setattr(actors, "load_pipeline", lambda *a, **k: pipe)
    before = [p.detach().clone() for p in pipe.text_encoder_2.parameters()]
    out = tmp_path / "pilot.json"
    argv = ["--model", "toy", "--steps", "2", "--size", "64", "--batch", "2", "--n-eval", "2", "--grow", "2,3",
            "--copy-heads", "--train-text-encoders", "--categories", "recolor,add", "--val-n", "2",
            "--save", str(tmp_path / "saved"), "--latent-cache", str(tmp_path / "cache"), "--out", str(out)]
    monkeypatch.setattr(recipe_pilot, "score", lambda p, n, s, seed=None: {"table": {"all": {"n": n}}})
    assert recipe_pilot.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["options"]["grow"] == [2, 3] and result["table"]["all"]["n"] == 2
    assert result["timing"]["s_per_step"] > 0 and set(result["val"]) == {"plain", "w4"}
    assert any(not torch.equal(a, b) for a, b in zip(before, pipe.text_encoder_2.parameters()))
    assert pipe.transformer.config.num_layers == 2 and (tmp_path / "saved" / "model_index.json").is_file()
    out.write_text("{}")
    assert recipe_pilot.main(argv) == 0 and out.read_text() == "{}"
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_latent_cache_returns_what_encoding_gives(tiny, tmp_path):
    from studies.toy.recipe_pilot import latents

    direct = latents(tiny, 4, 0, 2, 64, ("recolor",))
    first = latents(tiny, 4, 0, 2, 64, ("recolor",), str(tmp_path))
    again = latents(tiny, 4, 0, 2, 64, ("recolor",), str(tmp_path))
    other = latents(tiny, 4, 0, 2, 64, ("add",), str(tmp_path))
    for a, b in zip(direct[:2] + first[:2], first[:2] + again[:2]):
        assert torch.equal(a, b)
    assert direct[2] == again[2] and other[2] != direct[2] and len(list(tmp_path.glob("*.pt"))) == 2


@pytest.mark.slow   # a whole Ray Train job, ~1.5 min on 2 cores
def test_the_gpu_config_for_v3_runs_on_cpu_for_two_steps(tmp_path):
    """configs/train_toy_v3_gpu.yaml, what `bench/gpu.sh --train-toy` runs on a lent GPU: v2 grown to 4 + 8
    blocks with copy heads trains and checkpoints (two steps, batch 2, on this CPU)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jobs.train", "configs/train_toy_v3_gpu.yaml", "--fresh",
           "--set", "transformer.steps=2", "--set", "transformer.batch_size=2", "--set", "data.val_n=2",
           "--set", "checkpoint_every=1", "--set", f"output={out}", "--set", "name=toy-v3-smoke",
           "--set", f"storage_path={tmp_path / 'store'}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), env={**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    final = json.loads(done.stdout.strip().splitlines()[-1])["final"]
    assert final["step"] == 2 and math.isfinite(final["loss"])
    from diffusers import FluxTransformer2DModel
    grown = FluxTransformer2DModel.from_pretrained(out / "transformer")
    assert (grown.config.num_layers, grown.config.num_single_layers) == (4, 8)


def test_an_open_copy_path_adds_the_reference_features_from_step_0(tiny):
    """`open_gate`: the new copy-head blocks' attention reaches the residual (gate bias, identity v and out, no
    shift or scale), so the grown model no longer computes the small one's output; 0 keeps it exact."""
    from finetune.toy_grow import open_copy_path

    inputs = _inputs(tiny)
    big = grow_transformer(tiny.transformer, 3, 5, copy_heads=True, seed=1, open_gate=0.2)
    block = big.transformer_blocks[2]
    mod = block.norm1.linear
    size = mod.out_features // 6
    assert torch.all(mod.bias[2 * size:3 * size] == 0.2) and mod.weight[:3 * size].abs().max() == 0
    assert torch.equal(block.attn.to_v.weight, torch.eye(block.attn.to_v.in_features))
    with torch.no_grad():
        assert not torch.allclose(big(**inputs)[0], tiny.transformer(**inputs)[0], atol=1e-3)
    narrow = grow_transformer(tiny.transformer, 2, 2, copy_heads=True, seed=1).transformer_blocks[1]
    narrow.attn.to_v = torch.nn.Linear(64, 32)
    with pytest.raises(ValueError, match="model width"):
        open_copy_path(narrow, 0.2)


def test_pilot_pool_cycles_over_fixed_records_and_scores_the_seed_it_is_given(monkeypatch, tmp_path):
    """--pool N: every step draws from the same N records (a memorisation test; one latent file per batch), and
    --score-seed scores that seed's records; a pool that is not a multiple of the batch is refused."""
    import actors
    from studies.toy import recipe_pilot

    pipe = build_toy_flux_kontext(ToyModelConfig(**TINY))
    monkeypatch.setattr(actors, "load_pipeline", lambda *a, **k: pipe)
    seen = []
    monkeypatch.setattr(recipe_pilot, "score", lambda p, n, s, seed=None: seen.append(seed) or {"table": {}})
    argv = ["--model", "toy", "--steps", "3", "--size", "64", "--batch", "2", "--n-eval", "2", "--pool", "2",
            "--data-seed", "11", "--data-start", "0", "--score-seed", "11", "--latent-cache", str(tmp_path / "c"),
            "--out", str(tmp_path / "p.json")]
    assert recipe_pilot.main(argv) == 0
    assert seen == [11] and len(list((tmp_path / "c").glob("*.pt"))) == 1
    assert json.loads((tmp_path / "p.json").read_text())["options"]["pool"] == 2
    with pytest.raises(SystemExit):
        recipe_pilot.parse_args(["--pool", "3", "--batch", "2"])
