"""Training-time reference drop: masking dropped reference tokens as keys gives the noisy tokens exactly
what gathering the kept ones gives (per sample, in one batch with different keep counts) - the transformer's
output, the flow-matching loss and its gradients alike."""
import numpy as np
import torch

import actors
from finetune import flow_matching as T
from finetune.reference_drop import key_mask, sample_reference_keep
from finetune.toy_source import encode_batch
from toy.data import make_record, vocabulary
from toy.model import ToyModelConfig, build_toy_flux_kontext

TINY = dict(image_size=64, num_layers=1, num_single_layers=1, num_attention_heads=1, attention_head_dim=16,
            axes_dims_rope=(4, 6, 6), vae_channels=(8, 8, 8, 8), vae_groups=4, words=tuple(vocabulary()))


def test_keep_masks_follow_the_ratio_range():
    g = torch.Generator().manual_seed(0)
    keep = sample_reference_keep(200, 64, 0.25, 0.75, g)
    kept = keep.sum(1).float() / 64
    assert kept.min() >= 0.25 - 1 / 64 and kept.max() <= 0.75 + 1 / 64
    assert kept.std() > 0.05                        # the ratio varies per sample
    assert sample_reference_keep(3, 10, 1.0, 1.0, g).sum(1).tolist() == [1, 1, 1]
    assert sample_reference_keep(2, 10, 0.0, 0.0, g).all()


def test_masked_batch_equals_gathering_each_sample(flux_pipe, image_factory):
    editor = actors.Editor(flux_pipe, None)
    inputs = editor.adapter.prepare([image_factory(96, 64)], "make it red", seed=0, steps=4,
                                    guidance_scale=None, height=64, width=96)
    c, t = inputs.cond, inputs.timesteps[1]
    z = torch.cat([inputs.latents, torch.randn(inputs.latents.shape, generator=torch.Generator().manual_seed(1))])
    source = inputs.source.expand(2, -1, -1)
    keep = sample_reference_keep(2, source.shape[1], 0.3, 0.7, torch.Generator().manual_seed(2))
    assert keep.sum(1)[0] != keep.sum(1)[1] or not torch.equal(keep[0], keep[1])

    def call(hidden, ids, mask=None, batch=2):
        kwargs = {} if mask is None else {"attention_mask": mask}
        return flux_pipe.transformer(
            hidden_states=hidden, timestep=(t / 1000).expand(batch), guidance=c["guidance"].expand(batch),
            pooled_projections=c["pooled"].expand(batch, -1), encoder_hidden_states=c["prompt_embeds"].expand(batch, -1, -1),
            txt_ids=c["text_ids"], img_ids=ids, joint_attention_kwargs=kwargs, return_dict=False)[0]

    n_noisy, text = z.shape[1], c["prompt_embeds"].shape[1]
    with torch.no_grad():
        masked = call(torch.cat([z, source], 1), torch.cat([c["latent_ids"], c["source_ids"]]),
                      key_mask(keep, text, n_noisy))[:, :n_noisy]
        full = call(torch.cat([z, source], 1), torch.cat([c["latent_ids"], c["source_ids"]]))[:, :n_noisy]
    # diffusers' Flux attention processor honours the mask: hiding tokens changes what the noisy tokens get
    assert (masked - full).abs().max() > 1e-3
    with torch.no_grad():
        for b in range(2):
            rows = keep[b]
            gathered = call(torch.cat([z[b: b + 1], source[b: b + 1, rows]], 1),
                            torch.cat([c["latent_ids"], c["source_ids"][rows]]), batch=1)[:, :n_noisy]
            assert (masked[b] - gathered[0]).abs().max() <= 1e-4


def _loss_and_grads(model: torch.nn.Module, compute) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    return float(loss.detach()), grads


def test_training_loss_with_drop_equals_gathering_the_kept_references():
    """`flow_matching_loss(keep=...)` on a batch whose samples keep different counts: loss and gradients equal
    the mean over samples of the loss with each sample's kept reference tokens (and their ids) gathered."""
    pipe = build_toy_flux_kontext(ToyModelConfig(**TINY))
    recs = [make_record(0, i, 64) for i in range(3)]
    batch = encode_batch(pipe, np.stack([r.source for r in recs]), np.stack([r.target for r in recs]),
                         [r.instruction for r in recs])
    noisy_ids, source_ids = T.image_ids(pipe, 64, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    sigmas, noise = torch.tensor([0.2, 0.5, 0.8]), torch.randn(batch.z_tgt.shape, generator=g)
    keep = sample_reference_keep(3, batch.z_src.shape[1], 0.2, 0.9, g)
    assert len(set(keep.sum(1).tolist())) > 1 and not keep.all(1).any()
    model = pipe.transformer
    args = (batch.prompt_embeds, batch.pooled, batch.text_ids, noisy_ids)

    def masked():
        return T.flow_matching_loss(model, batch.z_src, batch.z_tgt, *args, source_ids, sigmas, noise, keep=keep)

    def gathered():
        return sum(T.flow_matching_loss(model, batch.z_src[b:b + 1, keep[b]], batch.z_tgt[b:b + 1],
                                        batch.prompt_embeds[b:b + 1], batch.pooled[b:b + 1], batch.text_ids,
                                        noisy_ids, source_ids[keep[b]], sigmas[b:b + 1], noise[b:b + 1])
                   for b in range(3)) / 3

    def full():
        return T.flow_matching_loss(model, batch.z_src, batch.z_tgt, *args, source_ids, sigmas, noise)

    loss_m, grad_m = _loss_and_grads(model, masked)
    loss_g, grad_g = _loss_and_grads(model, gathered)
    loss_f, _ = _loss_and_grads(model, full)
    assert abs(loss_m - loss_g) <= 1e-5 * max(1.0, abs(loss_g))
    for a, b in zip(grad_m, grad_g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert abs(loss_m - loss_f) > 1e-4            # the drop is really applied
