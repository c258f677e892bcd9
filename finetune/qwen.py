"""Qwen-Image-Edit(-Plus)'s objective: the references' latents after the noisy ones (`img_shapes` lists them),
the Qwen2.5-VL prompt that sees the reference images, no true CFG in training (the conditional branch is what
is learned). One transformer call per sample: prompts differ in length, and dropped reference tokens are
gathered out with their RoPE rows, exactly as inference drops them (`actors.families.qwen_image_edit`)."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from actors.models import family_of
from actors.families.qwen_image_edit.positions import RowSelection, gathered_positions

from .objective import Draws, velocity_target


class QwenObjective:
    def __init__(self, pipe: Any, max_sequence_length: int | None) -> None:
        self.pipe = pipe
        self.adapter = family_of(pipe).adapter(pipe)
        self.length = int(max_sequence_length or 512)

    def encode(self, images: list[Any], target: Any, instruction: str) -> dict[str, Any]:
        h, w = images[0].height, images[0].width
        inputs = self.adapter.prepare(images, instruction, seed=0, steps=1, guidance_scale=1.0,
                                      height=h, width=w, max_sequence_length=self.length)
        pipe, c = self.pipe, inputs.cond
        pixels = self.adapter._pixels(target, h, w)   # the adapter's own resize + preprocessing
        gen = torch.Generator("cpu").manual_seed(0)
        _, z_tgt = pipe.prepare_latents(pixels, 1, pipe.transformer.config.in_channels // 4, h, w,
                                        c["embeds"].dtype, pipe._execution_device, gen)
        mask = c["mask"][0] if c["mask"] is not None else torch.ones(c["embeds"].shape[1], dtype=torch.bool)
        return {"z_src": inputs.source[0].detach().float().cpu(), "z_tgt": z_tgt[0].detach().float().cpu(),
                "embeds": c["embeds"][0].detach().float().cpu(), "mask": mask.detach().bool().cpu(),
                "img_shapes": c["img_shapes"]}

    def call_count(self, samples: Sequence[dict[str, Any]]) -> int:
        return len(samples)

    def losses(self, model: torch.nn.Module, samples: Sequence[dict[str, Any]], draws: Draws,
               device: torch.device) -> Iterator[tuple[torch.Tensor, int]]:
        """One call per sample: (its loss, 1)."""
        inner = getattr(model, "module", model)   # DDP/FSDP wrap the transformer the hooks go on
        selection = RowSelection()
        with gathered_positions(inner, selection):
            for i, s in enumerate(samples):
                z_t, target = velocity_target(s["z_tgt"], draws.noise[i], draws.sigmas[i])
                n, source = z_t.shape[0], s["z_src"]
                keep = draws.keep[i]
                selection.rows = None
                if keep is not None:
                    source = source[keep]
                    selection.rows = torch.cat([torch.arange(n), n + keep.nonzero()[:, 0]]).to(device)
                hidden = torch.cat([z_t, source]).unsqueeze(0).to(device)
                v = model(hidden_states=hidden, timestep=draws.sigmas[i:i + 1].to(device),
                          encoder_hidden_states=s["embeds"].unsqueeze(0).to(device),
                          encoder_hidden_states_mask=s["mask"].unsqueeze(0).to(device),
                          img_shapes=s["img_shapes"], guidance=None, attention_kwargs={},
                          return_dict=False)[0][:, :n]
                yield F.mse_loss(v.float(), target.unsqueeze(0).to(device).float()), 1
