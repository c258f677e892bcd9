"""The toy model card: its quality bars and its text follow the model (size, grid, start, recipe)."""
import pytest

from toy.card import quality_bars, write_card
from toy.data import vocabulary
from toy.model import ToyModelConfig, build_toy_flux_kontext


def _row(edit, noop, bg=None, vae=30.0):
    return {"n": 1, "psnr_bg": bg, "psnr_edit": edit, "source_psnr_edit": noop, "vae_psnr_edit": vae,
            "vae_psnr_source": vae, "psnr_target": None, "mask_fraction": 0.1}


def _table():
    return {"recolor": _row(17.0, 11.0, bg=29.0), "add": _row(15.0, 11.0, bg=29.5), "move": _row(20.0, 11.0, bg=27.5),
            "invert": _row(17.5, 9.0), "background": _row(16.0, 9.0, bg=29.0), "all": _row(17.0, 10.0, bg=28.0)}


def test_quality_bars_check_gain_and_background():
    bars = {r["category"]: r for r in quality_bars(_table())}
    assert set(bars) == {"recolor", "add", "move", "invert", "background"}
    assert bars["recolor"]["ok"] and bars["recolor"]["gain"] == pytest.approx(6.0)
    assert not bars["add"]["ok"]                      # +4 dB < the local bar of +5
    assert not bars["move"]["ok"] and bars["move"]["bg_gap"] == pytest.approx(2.5)   # background 2.5 dB below the VAE
    assert bars["invert"]["ok"] and bars["invert"]["bg_gap"] is None
    assert not bars["background"]["ok"]               # +7 dB < the global bar of +8


def test_card_follows_the_model_and_includes_its_recipe(tmp_path):
    cfg = ToyModelConfig(image_size=256, num_layers=1, num_single_layers=1, num_attention_heads=1,
                         attention_head_dim=16, axes_dims_rope=(4, 6, 6), vae_channels=(8, 8, 8, 8), vae_groups=4,
                         words=tuple(vocabulary()))
    pipe = build_toy_flux_kontext(cfg)
    folder = tmp_path / "toy-flux-kontext-v2"
    folder.mkdir()
    (folder / "recipe.md").write_text("## Recipe: what was tried\n\nedit weight 8 vs 0: measured.\n")
    log = [{"phase": "transformer", "step": 10, "loss": 0.2, "val": 0.3, "lr": 1e-4, "seconds": 1.0, "wall_s": 60.0}]
    summary = {"model_config": cfg.to_dict(), "log": log, "wall_s": 60.0, "load": {"name": "toy-flux-kontext-v2"},
               "train_config": {"data": {"seed": 2, "categories": ["recolor", "add"]}, "threads": 2,
                                "scaling": {"num_workers": 1}, "init_from": "models/toy-flux-kontext",
                                "vae": {"steps": 5, "batch_size": 8},
                                "transformer": {"steps": 10, "batch_size": 16, "lr": 3e-4, "warmup": 5,
                                                "edit_weight": 4.0}}}
    text = write_card(folder, pipe, summary, _table(), n=5, steps=28, eval_seconds=30.0)
    assert text.startswith("# toy-flux-kontext-v2")
    assert "16x16 = 256 tokens per image" in text and "32 + 256 + 256 = 544 tokens" in text
    assert "It edits 256x256 images" in text and "configs/train_toy_v2.yaml" in text
    assert "Start: `models/toy-flux-kontext`" in text and "edit-weighted loss w = 4.0" in text
    assert "160 records in this run" in text      # the transformer phase only: no VAE phase ran
    assert "Training mix (cycled): recolor, add" in text
    assert "## Recipe: what was tried" in text and "Met for 2 of 5 categories" in text
    assert (folder / "MODEL_CARD.md").read_text() == text


def test_recipe_pilot_runs_and_scores(monkeypatch):
    """The pilot trains from a shipped model and scores per category; tiny here (2 steps, 2 records, 64 px)."""
    import actors
    from studies.toy import recipe_pilot

    tiny = build_toy_flux_kontext(ToyModelConfig(image_size=64, num_layers=1, num_single_layers=1,
                                                 num_attention_heads=1, attention_head_dim=16,
                                                 axes_dims_rope=(4, 6, 6), vae_channels=(8, 8, 8, 8), vae_groups=4,
                                                 words=tuple(vocabulary())))
    monkeypatch.setattr(actors, "load_pipeline", lambda *a, **k: tiny)
    before = [p.detach().clone() for p in tiny.transformer.parameters()]
    out = recipe_pilot.pilot("toy", edit_weight=4.0, steps=2, size=64, batch=2, n_eval=2, eval_steps=2)
    assert out["table"]["all"]["n"] == 2 and out["table"]["all"]["psnr_edit"] is not None
    assert any(not (a == b).all() for a, b in zip(before, tiny.transformer.parameters()))
