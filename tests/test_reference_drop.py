"""Training-time reference drop: masking dropped reference tokens as keys gives the noisy tokens exactly
what gathering the kept ones gives (per sample, in one batch with different keep counts)."""
import torch

import actors
from actors.reference_drop import key_mask, sample_reference_keep


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
        for b in range(2):
            rows = keep[b]
            gathered = call(torch.cat([z[b: b + 1], source[b: b + 1, rows]], 1),
                            torch.cat([c["latent_ids"], c["source_ids"][rows]]), batch=1)[:, :n_noisy]
            assert (masked[b] - gathered[0]).abs().max() <= 1e-4
