"""Training the toy model: encoding as the pipeline encodes, the flow-matching convention, steps that learn,
and the Ray Train job (a few steps, then a resume)."""
import csv
import json
import math

import numpy as np
import pytest
import torch

from finetune import flow_matching as T
from finetune.objective import draw, sample_sigmas
from finetune.toy_source import encode_batch
from metrics.pixel import psnr
from toy.data import make_record, vocabulary
from toy.model import T5_LENGTH, ToyModelConfig, build_toy_flux_kontext
from toy.vae import VaeLoss, set_latent_normalisation, to_pixels, to_uint8, vae_step

TINY = dict(image_size=64, num_layers=1, num_single_layers=1, num_attention_heads=1, attention_head_dim=16,
            axes_dims_rope=(4, 6, 6), vae_channels=(8, 8, 8, 8), vae_groups=4, words=tuple(vocabulary()))


@pytest.fixture(scope="module")
def tiny():
    return build_toy_flux_kontext(ToyModelConfig(**TINY))


def _records(n, size=64, seed=0):
    recs = [make_record(seed, i, size) for i in range(n)]
    return np.stack([r.source for r in recs]), np.stack([r.target for r in recs]), [r.instruction for r in recs]


def test_config_rejects_unknown_keys_and_bad_rope():
    with pytest.raises(ValueError, match="unknown model keys"):
        ToyModelConfig.from_mapping({"layers": 3})
    with pytest.raises(ValueError, match="must sum"):
        build_toy_flux_kontext(ToyModelConfig(**{**TINY, "axes_dims_rope": (4, 4, 4)}))


def test_toy_words_are_single_tokens(tiny):
    assert tiny.tokenizer_2.tokenize("move the purple diamond to the bottom left") == [
        "▁move", "▁the", "▁purple", "▁diamond", "▁to", "▁the", "▁bottom", "▁left"]


def test_latents_and_text_match_the_pipeline(tiny):
    """Training must see the source exactly as FluxKontextPipeline.prepare_latents / encode_prompt build it."""
    src, _, text = _records(2)
    pixels = to_pixels(src)
    ours = T.encode_latents(tiny, pixels)
    _, image_latents, latent_ids, image_ids = tiny.prepare_latents(
        pixels, 2, 16, 64, 64, torch.float32, torch.device("cpu"), torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours, image_latents)
    noisy, source = T.image_ids(tiny, 64, torch.device("cpu"))
    torch.testing.assert_close(noisy, latent_ids)
    torch.testing.assert_close(source, image_ids)
    embeds, pooled, ids = T.encode_text(tiny, text)
    assert embeds.shape == (2, T5_LENGTH, 32) and pooled.shape == (2, 32) and ids.shape == (T5_LENGTH, 3)
    # the uint8 round trip is the pipeline's own post-processing
    assert np.array_equal(to_uint8(pixels), src)


def test_editor_sees_what_training_sees(tiny, tmp_path):
    """Saved as the training job saves it (`dropedit.json`: the toy's 32-token T5 context), the model gives the
    editor that prompt length; the adapter pads prompts to it and passes no guidance, as in training."""
    from PIL import Image

    from actors.families.flux_kontext.adapter import FluxKontextAdapter
    from actors.loading import load_pipeline
    from actors.model_defaults import ModelDefaults, defaults_of, write_defaults

    tiny.save_pretrained(tmp_path)
    write_defaults(tmp_path, ModelDefaults(T5_LENGTH, ((64, 64),)), "as the training job writes it")
    length = defaults_of(load_pipeline("toy-flux-kontext", path=tmp_path)).max_sequence_length
    src, _, text = _records(1)
    inputs = FluxKontextAdapter(tiny).prepare([Image.fromarray(src[0])], text[0], seed=0, steps=2,
                                              guidance_scale=None, height=64, width=64, max_sequence_length=length)
    embeds, pooled, _ = T.encode_text(tiny, text)
    torch.testing.assert_close(inputs.cond["prompt_embeds"], embeds)
    torch.testing.assert_close(inputs.cond["pooled"], pooled)
    assert inputs.cond["guidance"] is None and embeds.shape[1] == T5_LENGTH == 32


class _Oracle(torch.nn.Module):
    """Returns the velocity that carries z_t exactly to z_tgt: (z_t − z_tgt)/σ."""

    def __init__(self, z_tgt):
        super().__init__()
        self.z_tgt = z_tgt

    def forward(self, hidden_states, timestep, **_):
        z_t = hidden_states[:, : self.z_tgt.shape[1]]
        return ((z_t - self.z_tgt) / timestep.view(-1, 1, 1),)


def test_flow_matching_target_is_noise_minus_target():
    """Sec. 2.1's convention: z_t = (1−σ)z_tgt + σε, v = ε − z_tgt; x̂0 = z_t − σv recovers z_tgt."""
    g = torch.Generator().manual_seed(0)
    z_src, z_tgt, noise = (torch.randn(2, 4, 64, generator=g) for _ in range(3))
    sigmas = torch.tensor([0.3, 0.8])
    ids = torch.zeros(4, 3)
    loss = T.flow_matching_loss(_Oracle(z_tgt), z_src, z_tgt, torch.zeros(2, 8, 32), torch.zeros(2, 32),
                                torch.zeros(8, 3), ids, ids, sigmas, noise)
    assert float(loss) < 1e-10
    # the printed Eq. 6 target (z_src − z_tgt) would not be what this oracle predicts
    v = noise - z_tgt
    assert not torch.allclose(v, z_src - z_tgt)


def test_sigmas_are_shifted_into_zero_one():
    from actors.tiny_models import FLUX_KONTEXT_SCHEDULER_CONFIG

    s = sample_sigmas(FLUX_KONTEXT_SCHEDULER_CONFIG, 4096, 64, torch.Generator().manual_seed(0))
    assert s.min() > 0 and s.max() < 1
    # FLUX's shift for 64 tokens is exp(mu) < e^0.5: the median σ moves above 1/2 but not far
    assert 0.5 < float(s.median()) < 0.65


def test_sigma_logit_mean_moves_every_draw_toward_noise():
    """SD3's logit-normal location m: the same generator draws the same normals, each shifted by m before the
    sigmoid, so every σ grows; at m = 1 the median lands where sigmoid(1) goes through the same shift."""
    import math

    from actors.tiny_models import FLUX_KONTEXT_SCHEDULER_CONFIG

    base = sample_sigmas(FLUX_KONTEXT_SCHEDULER_CONFIG, 4096, 64, torch.Generator().manual_seed(0))
    moved = sample_sigmas(FLUX_KONTEXT_SCHEDULER_CONFIG, 4096, 64, torch.Generator().manual_seed(0), logit_mean=1.0)
    assert bool((moved > base).all())
    shift = float(base.median() / (1 - base.median()))        # the shift the m = 0 median implies (u = 1/2)
    u = 1 / (1 + math.exp(-1.0))
    assert float(moved.median()) == pytest.approx(shift * u / (shift * u + 1 - u), abs=0.02)


def test_transformer_and_vae_steps_learn_a_fixed_batch(tiny):
    torch.manual_seed(0)
    src, tgt, text = _records(4)
    batch = encode_batch(tiny, src, tgt, text)
    opt = torch.optim.AdamW(tiny.transformer.parameters(), lr=3e-3)
    losses = [T.transformer_step(tiny, opt, batch, torch.Generator().manual_seed(0)) for _ in range(12)]
    assert losses[-1] < losses[0]           # same noise every step: a fixed objective that must go down
    assert all(math.isfinite(x) for x in losses)
    vae_loss = VaeLoss(tiny.vae)
    vopt = torch.optim.AdamW(tiny.vae.parameters(), lr=3e-3)
    pixels = to_pixels(src)
    vl = [vae_step(vae_loss, vopt, pixels)["loss"] for _ in range(8)]
    assert vl[-1] < vl[0]


def test_latent_normalisation_gives_unit_statistics(tiny):
    src, tgt, _ = _records(4)
    pixels = to_pixels(np.concatenate([src, tgt]))
    set_latent_normalisation(tiny, pixels)
    z = T.encode_latents(tiny, pixels)
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-3


def test_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 255
    mask = np.zeros((4, 4), bool)
    assert psnr(a, a) == float("inf")
    assert psnr(a, b, mask) != psnr(a, b, mask) and psnr(a, b, ~mask) == pytest.approx(10 * math.log10(16))


@pytest.mark.slow   # a whole Ray Train job (~1-2.5 min on 2 cores); the exact-resume LoRA run stays in the default suite
def test_train_job_runs_and_resumes_on_ray(ray_session, tmp_path):
    """A few steps of both phases on a 1-worker CPU TorchTrainer, then the same command with more steps
    continues from the checkpoint instead of starting over."""
    from jobs import train

    model = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items() if k != "words"}
    sets = [f"storage_path={tmp_path / 'runs'}", f"output={tmp_path / 'model'}", "name=ci",
            f"model={json.dumps(model)}", "vae.steps=2", "vae.batch_size=2", "vae.crop=32",
            "transformer.steps=2", "transformer.batch_size=2", "transformer.warmup=1",
            "transformer.reference_drop=[0.0, 0.9]", "transformer.val_drop_sweep=[0.0, 0.75]",
            "data.val_n=2", "report_every=1", "checkpoint_every=1"]
    args = ["configs/train_toy.yaml"] + [x for s in sets for x in ("--set", s)]
    assert train.main(args) == 0
    out = tmp_path / "model"
    assert (out / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((out / "dropedit.json").read_text())["max_sequence_length"] == T5_LENGTH   # edit defaults
    summary = json.loads((out / "loss.json").read_text())
    first = summary["log"]
    assert [(r["phase"], r["step"]) for r in first] == [("vae", 1), ("vae", 2), ("transformer", 1), ("transformer", 2)]
    # validation with and without the drop, every report of the transformer phase, and a sweep at the end
    assert all(math.isfinite(r["val_drop"]) and r["val_drop"] != r["val"] for r in first[2:])
    sweep = summary["val_sweep"]
    assert list(sweep) == ["0", "0.75"] and sweep["0"] == pytest.approx(first[-1]["val"])
    assert sweep["0.75"] != sweep["0"]

    assert train.main(args + ["--set", "transformer.steps=3"]) == 0
    log = json.loads((out / "loss.json").read_text())["log"]
    assert [(r["phase"], r["step"]) for r in log] == [(r["phase"], r["step"]) for r in first] + [("transformer", 3)]
    assert log[:4] == first                          # resumed, not redone
    with open(tmp_path / "runs" / "ci" / "loss.csv") as f:
        assert len(list(csv.DictReader(f))) == 5

    # exact resume: a run that fails at transformer step 1 and is restored from its checkpoint logs what the
    # uninterrupted run logged (same losses and validation, to the bit)
    failing = [a.replace("name=ci", "name=ci-fail").replace(str(tmp_path / "model"), str(tmp_path / "model-fail"))
               for a in args] + ["--set", "fail_at_step=1"]
    assert train.main(failing + ["--max-failures", "1"]) == 0
    summary = json.loads((tmp_path / "model-fail" / "loss.json").read_text())
    resumed = summary["log"]
    assert summary["resumed_at"] == [1]               # it did fail, and was restored at step 1
    keys = ("phase", "step", "loss", "val", "val_drop")
    assert [[r.get(k) for k in keys] for r in resumed] == [[r.get(k) for k in keys] for r in first]

    from diffusers import FluxKontextPipeline
    pipe = FluxKontextPipeline.from_pretrained(str(out), local_files_only=True)
    assert pipe.vae.config.scaling_factor != 1.0     # latent statistics were written into the config
    assert pipe.transformer.config.num_layers == 1


# The losses of the previous toy stack (toy/train_loop.py's `_train_step`, before the toy became a data source
# of finetune/'s driver) on TINY at data seed 0, fixed lr 1e-3: 3 VAE steps (batch 4, 32 px crops), then 3
# transformer steps (batch 4, edit_weight 4, no drop), recorded by running that code in-process.
# That loop sampled the VAE posterior from the global generator (seeded 0 here); the toy run now draws it from
# the step's generator, so that a run resumed inside the VAE phase is exact too.
PREVIOUS_STACK = {"vae": [0.6643720865249634, 0.8234931230545044, 0.5789104104042053],
                  "transformer": [1.5775452852249146, 1.5188350677490234, 1.5030542612075806]}


def test_toy_steps_reproduce_the_previous_stack():
    """The toy data source and the shared optimizer step draw the records, crops, σ and ε the toy's own
    training loop drew: its first steps give the recorded losses (the same models train)."""
    from finetune.objectives import objective_for
    from finetune.toy_source import ToySource
    from finetune.loop import optimizer_step

    pipe = build_toy_flux_kontext(ToyModelConfig(**TINY))
    source, cpu = ToySource(seed=0, size=64, rank=0, world=1), torch.device("cpu")
    vae_loss, vopt = VaeLoss(pipe.vae), torch.optim.AdamW(pipe.vae.parameters(), lr=1e-3, weight_decay=0.0)
    torch.manual_seed(0)
    vae = [vae_step(vae_loss, vopt, to_pixels(source.vae_images(s, 4, 32, source.generator("vae", s))))["loss"]
           for s in range(3)]
    pipe.vae.eval()
    params = list(pipe.transformer.parameters())
    topt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    objective = objective_for(pipe, T5_LENGTH, None, edit_weight=4.0)
    dit = [optimizer_step(pipe.transformer, topt, params, objective, pipe.scheduler.config,
                          [(source.samples(pipe, s, 4, T5_LENGTH, cpu), source.generator("transformer", s))], 4,
                          1e-3, None, "no", 1.0, cpu) for s in range(3)]
    assert vae == pytest.approx(PREVIOUS_STACK["vae"], rel=1e-5)
    assert dit == pytest.approx(PREVIOUS_STACK["transformer"], rel=1e-5)


def test_start_from_a_trained_vae(tiny, tmp_path):
    """`init_from`: another run's VAE (weights, latent statistics, log) and a transformer phase at step 0."""
    from finetune.toy_init import start_from_vae

    log = [{"phase": "vae", "step": 2, "wall_s": 5.0}, {"phase": "transformer", "step": 1, "wall_s": 6.0}]
    stats = {"shift_factor": 0.25, "scaling_factor": 2.0}
    torch.save({"vae": tiny.vae.state_dict(), "vae_stats": stats, "log": log}, tmp_path / "state.pt")
    other = build_toy_flux_kontext(ToyModelConfig(**{**TINY, "seed": 1}))
    state = start_from_vae(other, str(tmp_path))
    assert state == {"phase": "transformer", "step": 0, "log": log[:1], "vae_stats": stats, "wall_s": 5.0}
    for a, b in zip(other.vae.parameters(), tiny.vae.parameters()):
        assert torch.equal(a, b)
    assert other.vae.config.scaling_factor == 2.0
    torch.save({"vae": tiny.vae.state_dict(), "vae_stats": None, "log": []}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match="not finished its VAE phase"):
        start_from_vae(other, str(tmp_path))


def test_transformer_step_drops_reference_tokens_per_sample(tiny):
    """A few steps with `reference_drop` on: finite losses, weights that move, and a loss that is the
    gathered-reference loss of the very σ, ε and keep masks the step draws (not the full-context loss)."""
    pipe = build_toy_flux_kontext(ToyModelConfig(**TINY))
    src, tgt, text = _records(4)
    batch = encode_batch(pipe, src, tgt, text)
    b, n = batch.z_tgt.shape[:2]
    noisy_ids, source_ids = T.image_ids(pipe, 64, torch.device("cpu"))
    # the step's draws, replayed from the same seed: σ, then ε, then the keep masks
    d = draw(pipe.scheduler.config, [{"z_src": batch.z_src[i], "z_tgt": batch.z_tgt[i]} for i in range(b)],
             torch.Generator().manual_seed(7), (0.0, 0.95))
    sigmas, noise, keep = d.sigmas, torch.stack(d.noise), torch.stack(d.keep)
    with torch.no_grad():
        gathered = np.mean([float(T.flow_matching_loss(
            pipe.transformer, batch.z_src[i:i + 1, keep[i]], batch.z_tgt[i:i + 1], batch.prompt_embeds[i:i + 1],
            batch.pooled[i:i + 1], batch.text_ids, noisy_ids, source_ids[keep[i]], sigmas[i:i + 1],
            noise[i:i + 1])) for i in range(b)])
        full = float(T.flow_matching_loss(pipe.transformer, batch.z_src, batch.z_tgt, batch.prompt_embeds,
                                          batch.pooled, batch.text_ids, noisy_ids, source_ids, sigmas, noise))
    before = [p.detach().clone() for p in pipe.transformer.parameters()]
    opt = torch.optim.AdamW(pipe.transformer.parameters(), lr=3e-3)
    losses = [T.transformer_step(pipe, opt, batch, torch.Generator().manual_seed(7 + i), reference_drop=(0.0, 0.95))
              for i in range(4)]
    assert losses[0] == pytest.approx(gathered, rel=1e-5) and abs(losses[0] - full) > 1e-4
    assert all(math.isfinite(x) for x in losses)
    assert max(float((p.detach() - q).abs().max()) for p, q in zip(pipe.transformer.parameters(), before)) > 1e-3


def test_validation_loss_at_a_fixed_drop_is_fixed_and_differs_from_no_drop(tiny):
    src, tgt, text = _records(3)
    batch = encode_batch(tiny, src, tgt, text)
    none, half = T.validation_loss(tiny, batch), T.validation_loss(tiny, batch, 0.5)
    assert none == T.validation_loss(tiny, batch, 0.0) and half == T.validation_loss(tiny, batch, 0.5)
    assert half != none and math.isfinite(half)


def test_fine_tuning_starts_from_a_saved_pipeline(tmp_path):
    """`init_from` a save_pretrained folder: its weights and latent statistics, the transformer phase at step 0,
    and a model section that must describe it."""
    from finetune.toy_config import is_pipeline_folder
    from finetune.toy_init import load_init_pipeline, start_from_pipeline

    tiny = build_toy_flux_kontext(ToyModelConfig(**{**TINY, "seed": 3}))
    tiny.vae.register_to_config(shift_factor=0.125, scaling_factor=1.5)
    tiny.save_pretrained(tmp_path / "base")
    assert is_pipeline_folder(str(tmp_path / "base")) and not is_pipeline_folder(str(tmp_path))
    pipe = load_init_pipeline(str(tmp_path / "base"), ToyModelConfig(**TINY))
    for a, b in zip(pipe.transformer.parameters(), tiny.transformer.parameters()):
        assert torch.equal(a, b)
    assert start_from_pipeline(pipe) == {"phase": "transformer", "step": 0, "log": [], "wall_s": 0.0,
                                         "vae_stats": {"shift_factor": 0.125, "scaling_factor": 1.5}}
    with pytest.raises(ValueError, match="is not the config's model"):
        load_init_pipeline(str(tmp_path / "base"), ToyModelConfig(**{**TINY, "num_layers": 2}))


def test_fine_tuning_options_are_checked_before_training(tmp_path):
    from finetune.config import load_config

    with pytest.raises(ValueError, match="reference_drop"):
        load_config(None, ["transformer.reference_drop=[0.8, 0.2]"])
    with pytest.raises(ValueError, match="reference_drop"):
        load_config(None, ["transformer.reference_drop=0.5"])
    with pytest.raises(ValueError, match="lora_rank needs init_from"):
        load_config(None, ["lora_rank=4"])
    with pytest.raises(ValueError, match="neither a saved pipeline"):
        load_config(None, [f"init_from={tmp_path}"]).check_paths()
    load_config("configs/finetune_toy_drop.yaml").check_paths()
    drop, nodrop = (load_config(f"configs/finetune_toy_{k}.yaml").model_dump(mode="json") for k in ("drop", "nodrop"))
    assert drop["transformer"].pop("reference_drop") == [0.0, 0.95]
    assert nodrop["transformer"].pop("reference_drop") is None
    for cfg in (drop, nodrop):   # the two runs differ in the drop only (and where they write)
        for key in ("name", "output"):
            cfg.pop(key)
    assert drop == nodrop and drop["init_from"] == "models/toy-flux-kontext"


# ------------------------------------------------------------------ the shipped model

def test_shipped_toy_model_is_small_safetensors_with_its_card():
    from actors.models import shipped_folders

    folder = shipped_folders()["toy-flux-kontext"]
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 50 * 2 ** 20
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.parent.name for p in weights} >= {"transformer", "vae", "text_encoder", "text_encoder_2"}
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    for name in ("MODEL_CARD.md", "loss.png", "loss.json", "eval.json"):
        assert (folder / name).is_file(), name


@pytest.mark.parametrize("index", [1, 5, 6, 7])   # held-out remove, grayscale, invert, background
def test_shipped_toy_model_edits_toward_the_target(index):
    """Loaded by name, nothing downloaded: a held-out edit lands much closer to the exact target than the
    source is, inside the edited mask, and leaves the background close to the source."""
    import actors
    import policies
    from PIL import Image

    pipe = _shipped()
    rec = make_record(1, index)
    result = actors.Editor(pipe, policies.make("full")).edit(Image.fromarray(rec.source), rec.instruction,
                                                             steps=28, height=128, width=128)
    edited = np.asarray(result.image)
    assert psnr(edited, rec.target, rec.mask) > psnr(rec.source, rec.target, rec.mask) + 3
    if not rec.mask.all():   # background PSNR as the card and `dropedit report` compute it (PIE-Bench)
        from metrics.pixel import background_metrics
        assert background_metrics(edited, rec.source, rec.mask)["psnr_bg"] > 24


_PIPE = {}


def _shipped():
    import actors

    if "pipe" not in _PIPE:
        _PIPE["pipe"] = actors.load_pipeline("toy-flux-kontext", device="cpu")
    return _PIPE["pipe"]


# ------------------------------------------------------------------ v2's recipe options

def test_changed_tokens_follow_the_edit_and_weight_the_loss():
    """The edit-weighted loss: 0 is the plain mean; w > 0 is the weighted mean over tokens, computed by hand."""
    g = torch.Generator().manual_seed(0)
    z_src = torch.randn(2, 4, 64, generator=g)
    z_tgt = z_src.clone()
    z_tgt[0, 1] += 2.0            # one token changed in sample 0, none in sample 1
    z_tgt[1, 2, 5] += 0.3         # below the threshold: not a change
    changed = T.changed_tokens(z_src, z_tgt)
    assert changed.tolist() == [[False, True, False, False], [False, False, False, False]]
    noise, sigmas, ids = torch.randn(2, 4, 64, generator=g), torch.tensor([0.3, 0.8]), torch.zeros(4, 3)
    model = _Oracle(torch.zeros_like(z_tgt))   # aims at 0 instead of z_tgt: the error is z_tgt / σ
    args = (model, z_src, z_tgt, torch.zeros(2, 8, 32), torch.zeros(2, 32), torch.zeros(8, 3), ids, ids, sigmas,
            noise)
    plain, weighted = T.flow_matching_loss(*args), T.flow_matching_loss(*args, edit_weight=4.0)
    per_token = (z_tgt / sigmas.view(-1, 1, 1)).pow(2).mean(-1)
    assert torch.allclose(plain, per_token.mean())
    w = 1 + 4.0 * changed.float()
    assert torch.allclose(weighted, (w * per_token).sum() / w.sum())
    assert float(weighted) > float(plain)   # the changed token has the largest error here


def test_data_mix_and_edit_weight_are_config_options(tmp_path):
    from finetune.config import load_config
    from finetune.toy_source import batch_arrays

    cats = ["recolor", "add"]
    _, _, text = batch_arrays(0, 10, 4, 64, cats)
    assert [make_record(0, i, 64, cats[i % 2]).instruction for i in range(10, 14)] == text
    with pytest.raises(ValueError, match="data.categories"):
        load_config(None, ["data.categories=[recolor, sharpen]"])
    with pytest.raises(ValueError, match="edit_weight"):
        load_config(None, ["transformer.edit_weight=-1"])
    cfg = load_config("configs/train_toy_v2.yaml")
    cfg.check_paths()
    assert cfg.model["image_size"] == 256 and cfg.init_from == "models/toy-flux-kontext"


def test_sigma_logit_mean_is_a_config_option_that_reaches_the_optimizer_step():
    """`transformer.sigma_logit_mean` (checked in [-3, 3]) moves the σ the shared step draws: the same models, records
    and generator give another loss than at m = 0, and m = 0 is the default."""
    from finetune.config import load_config
    from finetune.loop import optimizer_step
    from finetune.objectives import objective_for
    from finetune.toy_source import ToySource

    assert load_config(None, ["transformer.sigma_logit_mean=1"]).transformer.sigma_logit_mean == 1.0
    assert load_config(None, []).transformer.sigma_logit_mean == 0.0
    with pytest.raises(ValueError, match="sigma_logit_mean"):
        load_config(None, ["transformer.sigma_logit_mean=5"])
    source, cpu = ToySource(seed=0, size=64, rank=0, world=1), torch.device("cpu")

    def loss(*mean: float) -> float:
        pipe = build_toy_flux_kontext(ToyModelConfig(**TINY))
        params = list(pipe.transformer.parameters())
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
        return optimizer_step(pipe.transformer, opt, params, objective_for(pipe, T5_LENGTH, None),
                              pipe.scheduler.config, [(source.samples(pipe, 0, 2, T5_LENGTH, cpu),
                                                       source.generator("transformer", 0))], 2, 1e-3, None, "no",
                              1.0, cpu, *mean)

    assert loss() == loss(0.0) != loss(1.0)


def test_progressive_resolution_starts_from_a_smaller_model(tmp_path):
    """init_from a pipeline saved at 64 px into a 128 px config: the same weights, the new image size."""
    from finetune.toy_init import load_init_pipeline

    small = build_toy_flux_kontext(ToyModelConfig(**TINY))
    small.save_pretrained(tmp_path / "small")
    pipe = load_init_pipeline(str(tmp_path / "small"), ToyModelConfig(**{**TINY, "image_size": 128}))
    assert pipe.vae.config.sample_size == 128
    for a, b in zip(pipe.transformer.parameters(), small.transformer.parameters()):
        assert torch.equal(a, b)
    batch = encode_batch(pipe, *_records(2, size=128), T5_LENGTH)
    assert batch.z_src.shape[1] == (128 // 16) ** 2   # 8x8 tokens: 16 px per token


# ------------------------------------------------------------------ the shipped v2 (256 px, 16x16 tokens)

def test_shipped_v2_is_small_safetensors_with_its_card_and_recipe():
    from actors.model_defaults import read_defaults
    from actors.models import shipped_folders

    folder = shipped_folders()["toy-flux-kontext-v2"]
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 50 * 2 ** 20
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    for name in ("MODEL_CARD.md", "recipe.md", "loss.png", "loss.json", "eval.json"):
        assert (folder / name).is_file(), name
    assert read_defaults(folder).sizes == ((256, 256),)
    assert "Quality bars" in (folder / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize("index", [41, 8, 71])   # held-out remove, recolor, background (the demo's)
def test_shipped_v2_edits_toward_the_target(index):
    """v2 by name, at 256 px: the edit lands closer to the exact target than the source is, inside the mask."""
    import actors
    import policies
    from PIL import Image

    if "v2" not in _PIPE:
        _PIPE["v2"] = actors.load_pipeline("toy-flux-kontext-v2", device="cpu")
    rec = make_record(1, index, 256)
    result = actors.Editor(_PIPE["v2"], policies.make("full")).edit(Image.fromarray(rec.source), rec.instruction,
                                                                    steps=8, height=256, width=256)
    edited = np.asarray(result.image)
    assert psnr(edited, rec.target, rec.mask) > psnr(rec.source, rec.target, rec.mask) + 3
