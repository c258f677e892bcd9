import pytest
"""LoRA adapters through diffusers' peft integration: trained weights saved apart from the base model and
loaded back (fused) by `actors.load_pipeline(..., lora=DIR)` give the adapted model's output."""
import torch

import actors
import policies
from finetune.lora import add_lora, save_lora


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


# ------------------------------------------------------------------ fine-tuning a LoRA adapter

TINY = dict(image_size=64, num_layers=1, num_single_layers=1, num_attention_heads=1, attention_head_dim=16,
            axes_dims_rope=(4, 6, 6), vae_channels=(8, 8, 8, 8), vae_groups=4)


def _base(folder):
    """A tiny toy model saved as a pipeline folder: the base an adapter is trained on."""
    from toy.data import vocabulary
    from toy.model import ToyModelConfig, build_toy_flux_kontext

    build_toy_flux_kontext(ToyModelConfig(**TINY, words=tuple(vocabulary()))).save_pretrained(folder)
    return folder


def _batch(pipe, n=2):
    import numpy as np

    from finetune.toy_source import encode_batch
    from toy.data import make_record

    recs = [make_record(0, i, 64) for i in range(n)]
    return encode_batch(pipe, np.stack([r.source for r in recs]), np.stack([r.target for r in recs]),
                        [r.instruction for r in recs])


def _velocity(pipe, batch):
    """The transformer's velocity for fixed σ and noise: what an edit's every step computes."""
    from finetune import flow_matching as T

    noisy_ids, source_ids = T.image_ids(pipe, 64, torch.device("cpu"))
    noise = torch.randn(batch.z_tgt.shape, generator=torch.Generator().manual_seed(0))
    z_t = 0.5 * batch.z_tgt + 0.5 * noise
    with torch.no_grad():
        return pipe.transformer(hidden_states=torch.cat([z_t, batch.z_src], 1),
                                timestep=torch.full((len(z_t),), 0.5), guidance=None,
                                pooled_projections=batch.pooled, encoder_hidden_states=batch.prompt_embeds,
                                txt_ids=batch.text_ids, img_ids=torch.cat([noisy_ids, source_ids]),
                                return_dict=False)[0]


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_lora_training_steps_train_the_adapter_only_and_it_loads_back(tmp_path):
    """A few flow-matching steps (with reference drop) on a LoRA-wrapped transformer: only the adapter moves;
    the saved adapter, loaded onto the untouched base by `load_pipeline(..., lora=...)`, gives the trained
    model's velocity."""
    from finetune import flow_matching as T

    base_dir = _base(tmp_path / "base")
    files = _files(base_dir)
    pipe = actors.load_pipeline("toy-flux-kontext", path=base_dir, device="cpu")
    batch = _batch(pipe)
    base_v = _velocity(pipe, batch)
    base_weights = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    trainable = add_lora(pipe.transformer, rank=4)
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    losses = [T.transformer_step(pipe, opt, batch, torch.Generator().manual_seed(i), reference_drop=(0.0, 0.9))
              for i in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    state = pipe.transformer.state_dict()
    for name, value in base_weights.items():   # peft renames a wrapped layer's weight to ...base_layer.weight
        wrapped = name.rsplit(".", 1)[0] + ".base_layer." + name.rsplit(".", 1)[1]
        assert torch.equal(state.get(wrapped, state.get(name)), value), name
    trained_v = _velocity(pipe, batch)
    assert (trained_v - base_v).abs().max() > 1e-3
    folder = save_lora(pipe, tmp_path / "adapter")
    loaded = actors.load_pipeline("toy-flux-kontext", path=base_dir, device="cpu", lora=folder)
    assert (_velocity(loaded, batch) - trained_v).abs().max() <= 1e-5
    assert _files(base_dir) == files                      # the base folder is untouched


@pytest.mark.slow   # a whole Ray Train job (~1-2.5 min on 2 cores); the exact-resume LoRA run stays in the default suite
def test_train_job_fine_tunes_a_lora_adapter(ray_session, tmp_path):
    """`lora_rank` in the Ray Train job: the output folder is the adapter alone; loaded onto the untouched base
    it gives the velocity of the job's own last state (base + the adapter tensors of its checkpoint)."""
    import json

    from finetune.lora import load_adapter_state
    from jobs import train

    base_dir = _base(tmp_path / "base")
    files = _files(base_dir)
    out = tmp_path / "adapter"
    sets = [f"storage_path={tmp_path / 'runs'}", f"output={out}", "name=lora", f"init_from={base_dir}",
            f"model={json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()})}",
            "lora_rank=4", "transformer.steps=2", "transformer.batch_size=2", "transformer.warmup=1",
            "transformer.lr=1e-2", "transformer.reference_drop=[0.0, 0.9]", "data.val_n=2", "report_every=1",
            "checkpoint_every=1"]
    assert train.main(["configs/train_toy.yaml"] + [x for s in sets for x in ("--set", s)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["loss.json", "pytorch_lora_weights.safetensors"]
    summary = json.loads((out / "loss.json").read_text())
    assert [(r["phase"], r["step"]) for r in summary["log"]] == [("transformer", 1), ("transformer", 2)]
    assert summary["load"] == {"name": "toy-flux-kontext", "path": str(base_dir), "lora": str(out)}
    assert _files(base_dir) == files

    base = actors.load_pipeline("toy-flux-kontext", path=base_dir, device="cpu")
    batch = _batch(base)
    loaded = actors.load_pipeline("toy-flux-kontext", path=base_dir, device="cpu", lora=out)
    last = max(p for p in (tmp_path / "runs" / "lora").glob("checkpoint_*") if p.is_dir())
    assert (last / "lora" / "pytorch_lora_weights.safetensors").is_file()   # every checkpoint holds the adapter
    saved = torch.load(last / "state.pt", map_location="cpu", weights_only=False)
    assert saved["weights"] and all("lora_" in k for k in saved["weights"])
    add_lora(base.transformer, rank=4)
    load_adapter_state(base.transformer, saved["weights"])
    assert (_velocity(loaded, batch) - _velocity(base, batch)).abs().max() <= 1e-5
    plain = actors.load_pipeline("toy-flux-kontext", path=base_dir, device="cpu")
    assert (_velocity(loaded, batch) - _velocity(plain, batch)).abs().max() > 1e-4
