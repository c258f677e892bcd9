"""LoRA adapters through diffusers' peft integration: trained weights saved apart from the base model and
loaded back (fused) by `actors.load_pipeline(..., lora=DIR)` give the adapted model's output."""
import torch

import actors
import policies
from actors.lora import add_lora, save_lora


def test_lora_saved_apart_and_loaded_back_edits_like_the_adapted_model(tmp_path, image_factory):
    pipe = actors.load_pipeline("tiny-flux-kontext", device="cpu")    # a private copy: it gets adapted
    image = image_factory(96, 64)
    kw = dict(seed=0, steps=2, height=64, width=96)
    base = actors.Editor(pipe, policies.make("full")).edit(image, "make it red", **kw)
    trainable = add_lora(pipe.transformer, rank=4)
    assert trainable and all(p.requires_grad for p in trainable)
    assert not any(p.requires_grad for n, p in pipe.transformer.named_parameters() if "lora_" not in n)
    with torch.no_grad():   # stand-in for training: peft starts B at zero, which changes nothing
        for p in trainable:
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    adapted = actors.Editor(pipe, policies.make("full")).edit(image, "make it red", **kw)
    assert abs(adapted.pixels - base.pixels).max() > 1e-3
    folder = save_lora(pipe, tmp_path / "lora")
    files = [f.name for f in folder.iterdir()]
    assert files == ["pytorch_lora_weights.safetensors"]            # the adapter only, not the base weights
    loaded = actors.load_pipeline("tiny-flux-kontext", device="cpu", lora=folder)
    again = actors.Editor(loaded, policies.make("topi", layers="all", exempt_layers=1, tau=1.0)) \
        .edit(image, "make it red", **kw)
    assert abs(again.pixels - adapted.pixels).max() <= 1e-4
    assert not any("lora" in n for n, _ in loaded.transformer.named_modules())   # fused, no adapter left
