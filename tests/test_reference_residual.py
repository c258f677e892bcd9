"""The reference-residual parameterisation (toy v3's copy prior, `actors.reference_residual`)."""
import numpy as np
import pytest
import torch

import actors
import policies
from actors.model_defaults import ModelDefaults, read_defaults, write_defaults
from actors.reference_residual import (apply_reference_residual, full_reference, is_reference_residual,
                                       residual_velocity)
from actors.tiny_models import build_tiny_flux_kontext
from finetune.flow_matching import flow_matching_loss, image_ids
from finetune.toy_copy_prior import start_reference_residual

TOL = 1e-3


def _ids(frame: int, rows: int, cols: int) -> torch.Tensor:
    ids = torch.zeros(rows * cols, 3)
    ids[:, 0] = frame
    ids[:, 1] = torch.arange(rows).repeat_interleave(cols)
    ids[:, 2] = torch.arange(cols).repeat(rows)
    return ids


def test_velocity_is_the_rectified_flow_one_with_the_reference_matched_by_position():
    gen = torch.Generator().manual_seed(0)
    z, ref, raw = (torch.randn(2, 6, 4, generator=gen) for _ in range(3))
    noisy_ids, ref_ids = _ids(0, 2, 3), _ids(1, 2, 3)
    perm = torch.tensor([4, 0, 5, 2, 1, 3])   # reference rows in another order: matched by (row, column)
    hidden = torch.cat([z, ref[:, perm]], dim=1)
    ids = torch.cat([noisy_ids, ref_ids[perm]])
    sigma = torch.tensor([0.5, 0.25])
    out = residual_velocity(torch.cat([raw, torch.zeros(2, 6, 4)], 1), hidden, ids, sigma)
    expected = (z - ref - raw) / sigma.reshape(2, 1, 1)
    torch.testing.assert_close(out[:, :6], expected)
    # x̂0 = z − σ·v is the reference plus the raw output: r = 0 is a copy
    torch.testing.assert_close(z - sigma.reshape(2, 1, 1) * out[:, :6], ref + raw)


def test_a_call_missing_reference_positions_is_refused_unless_the_whole_reference_is_given():
    z, ref, raw = torch.randn(1, 4, 2), torch.randn(1, 4, 2), torch.randn(1, 6, 2)
    keep = torch.tensor([0, 3])
    ids = torch.cat([_ids(0, 2, 2), _ids(1, 2, 2)[keep]])
    with pytest.raises(ValueError, match="reference token at every output position"):
        residual_velocity(raw, torch.cat([z, ref[:, keep]], 1), ids, torch.tensor([0.5]))
    whole = residual_velocity(raw, torch.cat([z, ref[:, keep]], 1), ids, torch.tensor([0.5]),
                              full=(ref, _ids(1, 2, 2)))
    torch.testing.assert_close(whole[:, :4], (z - ref - raw[:, :4]) / 0.5)


@pytest.fixture(scope="module")
def prior_pipe():
    pipe = build_tiny_flux_kontext(seed=3)
    start_reference_residual(pipe.transformer)
    return pipe


def test_a_zeroed_output_layer_copies_the_source_whatever_the_policy(prior_pipe, image_factory):
    """r = 0: every step's x̂0 is the source latent, so `full` and a policy that drops half the reference
    (the whole reference given by the adapter) both return the source's VAE reconstruction."""
    image = image_factory(64, 64, seed=1)
    results = [actors.Editor(prior_pipe, policies.make(name, **params)).edit(
        image, "make it red", seed=0, steps=3, height=64, width=64)
        for name, params in (("full", {}), ("random", {"ratio": 0.5}))]
    assert results[1].trace[0].kept < results[1].trace[0].total   # the random policy did drop reference tokens
    np.testing.assert_allclose(results[0].pixels, results[1].pixels, atol=1e-5)
    x0 = _encode(prior_pipe, image)
    recon = prior_pipe.vae.decode(x0, return_dict=False)[0]
    expected = prior_pipe.image_processor.postprocess(recon.detach(), output_type="np")[0]
    np.testing.assert_allclose(results[0].pixels, expected, atol=1e-4)


def _encode(pipe, image):
    pixels = pipe.image_processor.preprocess(image, 64, 64)
    with torch.no_grad():
        return pipe.vae.encode(pixels).latent_dist.mode()


def test_full_equals_diffusers_pipeline_with_the_prior(image_factory):
    """The prior is on the transformer, so diffusers' own __call__ sees it too: our loop still equals it."""
    pipe = build_tiny_flux_kontext(seed=4)
    apply_reference_residual(pipe.transformer)   # random (non-zero) output layer: a real edit, not a copy
    image = image_factory(64, 64, seed=2)
    ours = actors.Editor(pipe, policies.make("full")).edit(image, "make it blue", seed=5, steps=3, height=64,
                                                           width=64)
    ref = pipe(image=image, prompt="make it blue", num_inference_steps=3, output_type="np", height=64, width=64,
               max_area=64 * 64, _auto_resize=False, guidance_scale=3.5,
               generator=torch.Generator("cpu").manual_seed(5)).images[0]
    assert np.abs(ours.pixels - ref).max() <= TOL
    plain = build_tiny_flux_kontext(seed=4)
    without = actors.Editor(plain, policies.make("full")).edit(image, "make it blue", seed=5, steps=3, height=64,
                                                               width=64)
    assert np.abs(ours.pixels - without.pixels).max() > 10 * TOL   # the prior changes what the model does


def test_an_unchanged_record_costs_nothing_to_learn(prior_pipe):
    """Training sees the prior too: with r = 0, a target equal to its source has zero flow-matching loss."""
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, 16, prior_pipe.transformer.config.in_channels, generator=gen)
    noisy_ids, source_ids = image_ids(prior_pipe, 4 * 2 * prior_pipe.vae_scale_factor, z.device)
    embeds, pooled, text_ids = prior_pipe.encode_prompt(prompt=["a", "b"], prompt_2=None, device=z.device,
                                                        num_images_per_prompt=1, max_sequence_length=16)
    with torch.no_grad():
        loss = flow_matching_loss(prior_pipe.transformer, z, z, embeds, pooled, text_ids, noisy_ids, source_ids,
                                  torch.tensor([0.3, 0.8]), torch.randn(z.shape, generator=gen),
                                  guidance=torch.full([2], 3.5))
    assert float(loss) < 1e-10


def test_the_prediction_travels_with_the_model_folder(tmp_path):
    pipe = build_tiny_flux_kontext(seed=0)
    pipe.save_pretrained(tmp_path)
    assert not is_reference_residual(actors.load_pipeline("tiny-flux-kontext", path=tmp_path).transformer)
    write_defaults(tmp_path, ModelDefaults(prediction="reference_residual"), "test")
    assert read_defaults(tmp_path).prediction == "reference_residual"
    assert is_reference_residual(actors.load_pipeline("tiny-flux-kontext", path=tmp_path).transformer)
    (tmp_path / "dropedit.json").write_text('{"prediction": "epsilon"}')
    with pytest.raises(ValueError, match="prediction must be one of"):
        read_defaults(tmp_path)


def test_full_reference_is_a_no_op_on_a_plain_model():
    pipe = build_tiny_flux_kontext(seed=0)
    with full_reference(pipe.transformer, torch.zeros(1, 4, 4), torch.zeros(4, 3)):
        assert not is_reference_residual(pipe.transformer)


def _saved_toy(folder):
    from toy.data import vocabulary
    from toy.model import ToyModelConfig, build_toy_flux_kontext

    model = dict(image_size=64, num_layers=1, num_single_layers=1, num_attention_heads=2, attention_head_dim=32,
                 axes_dims_rope=(8, 12, 12), vae_channels=(8, 8, 8, 8), vae_groups=4, words=tuple(vocabulary()))
    pipe = build_toy_flux_kontext(ToyModelConfig(**model))
    pipe.save_pretrained(folder)
    return model


def test_a_toy_run_switched_to_the_prior_starts_as_a_copy_and_resumes_with_its_weights(tmp_path):
    import contextlib

    from finetune.toy_config import ToyTrainConfig
    from finetune.toy_init import start
    from toy.model import ToyModelConfig

    model = _saved_toy(tmp_path / "v2")
    cfg = ToyTrainConfig.model_validate({"init_from": str(tmp_path / "v2"), "model": model,
                                         "prediction": "reference_residual"})
    pipe, _, state, saved = start(cfg, ToyModelConfig(**model), None)
    assert saved is None and is_reference_residual(pipe.transformer)
    assert not pipe.transformer.proj_out.weight.any() and not pipe.transformer.proj_out.bias.any()
    trained = {k: v + 0.01 for k, v in pipe.transformer.state_dict().items()}
    (tmp_path / "ckpt").mkdir()
    torch.save({"phase": "transformer", "step": 3, "log": [], "wall_s": 1.0, "vae_stats": None, "val_sweep": None,
                "recent": [], "resumed_at": [], "weights": trained, "vae": pipe.vae.state_dict()},
               tmp_path / "ckpt" / "state.pt")

    class Checkpoint:
        @contextlib.contextmanager
        def as_directory(self):
            yield str(tmp_path / "ckpt")

    resumed, _, state, _ = start(cfg, ToyModelConfig(**model), Checkpoint())
    assert is_reference_residual(resumed.transformer) and state["step"] == 3
    assert torch.equal(resumed.transformer.proj_out.weight, trained["proj_out.weight"])   # not zeroed again
    write_defaults(tmp_path / "v2", ModelDefaults(prediction="reference_residual"), "test")
    plain = ToyTrainConfig.model_validate({"init_from": str(tmp_path / "v2"), "model": model})
    with pytest.raises(ValueError, match="set prediction: reference_residual"):
        start(plain, ToyModelConfig(**model), None)


def test_the_pilot_option_trains_and_saves_a_model_that_loads_with_the_prior(monkeypatch, tmp_path):
    from studies.toy import recipe_pilot

    _saved_toy(tmp_path / "v2")
    pipe = actors.load_pipeline("toy-flux-kontext", path=tmp_path / "v2", device="cpu", dtype=torch.float32)
    monkeypatch.setattr(actors, "load_pipeline", lambda *a, **k: pipe)
    monkeypatch.setattr(recipe_pilot, "score", lambda p, n, s, seed=None: {"table": {"all": {"n": n}}})
    argv = ["--model", "toy", "--steps", "2", "--size", "64", "--batch", "2", "--n-eval", "2", "--edit-weight", "2",
            "--reference-residual", "--save", str(tmp_path / "saved"), "--out", str(tmp_path / "pilot.json")]
    assert recipe_pilot.main(argv) == 0
    assert is_reference_residual(pipe.transformer) and pipe.transformer.proj_out.weight.any()   # it trained
    assert read_defaults(tmp_path / "saved").prediction == "reference_residual"
    monkeypatch.undo()
    loaded = actors.load_pipeline("toy-flux-kontext", path=tmp_path / "saved", device="cpu")
    assert is_reference_residual(loaded.transformer)


def test_the_model_card_says_what_the_transformer_predicts_and_what_that_means_for_judging():
    from toy.card import _limits, _prediction_row

    pipe = build_tiny_flux_kontext(seed=0)
    assert _prediction_row(pipe) == [] and not any("copy prior" in line for line in _limits(64, "C", "n"))
    apply_reference_residual(pipe.transformer)
    assert "reference_residual" in _prediction_row(pipe)[0]
    assert any("copy prior is structural" in line for line in _limits(64, "C", "n", prior=True))


def test_per_edit_hooks_come_and_go_around_the_prior(image_factory):
    """SpotEdit's branch hook and a temporal cache register on the same transformer for one edit; removing
    them afterwards leaves the prior in place and `full` unchanged."""
    pipe = build_tiny_flux_kontext(seed=6)
    apply_reference_residual(pipe.transformer)
    image = image_factory(64, 64, seed=3)

    def full():
        return actors.Editor(pipe, policies.make("full")).edit(image, "make it green", seed=1, steps=3, height=64,
                                                               width=64).pixels

    before = full()
    actors.Editor(pipe, policies.make("spotedit")).edit(image, "make it green", seed=1, steps=3, height=64, width=64)
    actors.Editor(pipe, policies.make("full")).edit(image, "make it green", seed=1, steps=3, height=64, width=64,
                                                    cache="first-block")
    assert is_reference_residual(pipe.transformer)
    np.testing.assert_array_equal(full(), before)


def test_the_residual_flow_reads_the_noisy_residual():
    """With `residual_input` the transformer's own forward sees z − (1 − σ)·x_ref on the noisy rows; the
    velocity is derived as with the output-only prior. Another prior on the same transformer is refused."""
    from actors.reference_residual import prediction_of

    plain, prior = build_tiny_flux_kontext(seed=2), build_tiny_flux_kontext(seed=2)
    apply_reference_residual(prior.transformer, residual_input=True)
    assert prediction_of(prior.transformer) == "residual_flow" and prediction_of(plain.transformer) == "velocity"
    gen = torch.Generator().manual_seed(3)
    c = prior.transformer.config.in_channels
    z, ref = torch.randn(1, 16, c, generator=gen), torch.randn(1, 16, c, generator=gen)
    embeds, pooled, text_ids = plain.encode_prompt(prompt="a", prompt_2=None, device="cpu", num_images_per_prompt=1,
                                                   max_sequence_length=16)
    noisy_ids, source_ids = image_ids(plain, 4 * 2 * plain.vae_scale_factor, z.device)
    call = dict(timestep=torch.tensor([0.4]), guidance=torch.tensor([3.5]), pooled_projections=pooled,
                encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=torch.cat([noisy_ids, source_ids]),
                return_dict=False)
    with torch.no_grad():
        got = prior.transformer(hidden_states=torch.cat([z, ref], 1), **call)[0][:, :16]
        raw = plain.transformer(hidden_states=torch.cat([z - 0.6 * ref, ref], 1), **call)[0][:, :16]
    torch.testing.assert_close(got, (z - ref - raw) / 0.4, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="already predicts residual_flow"):
        apply_reference_residual(prior.transformer)
