"""FLUX.1-Kontext's objective: the source as Kontext's conditioning sequence (frame index 1), T5 + CLIP text,
the distilled guidance as an input, a whole micro-batch in one transformer call with dropped reference tokens
hidden as attention keys per sample (`finetune.flow_matching.flow_matching_loss`; with `edit_weight` w > 0 the
tokens an edit changes weigh 1 + w, the toy's v2 recipe)."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch

from actors.models import family_of

from . import flow_matching as T
from .objective import Draws


class FluxObjective:
    def __init__(self, pipe: Any, max_sequence_length: int | None, guidance: float | None,
                 edit_weight: float = 0.0) -> None:
        self.pipe = pipe
        self.edit_weight = edit_weight
        self.adapter = family_of(pipe).adapter(pipe)
        # the model's own T5 context: 512 for FLUX.1-Kontext-dev, shorter for the tiny and toy models
        self.length = int(max_sequence_length or min(512, pipe.tokenizer_2.model_max_length))
        self.guidance = guidance

    def encode(self, images: list[Any], target: Any, instruction: str) -> dict[str, torch.Tensor]:
        if len(images) != 1:
            raise ValueError(f"FLUX.1-Kontext edits one image; a record has {len(images)} (use Qwen-Image-Edit-Plus)")
        h, w = images[0].height, images[0].width
        inputs = self.adapter.prepare(images, instruction, seed=0, steps=1, guidance_scale=self.guidance,
                                      height=h, width=w, max_sequence_length=self.length)
        c = inputs.cond
        target_pixels = self.pipe.image_processor.preprocess(target, h, w)
        z_tgt = T.encode_latents(self.pipe, target_pixels.to(self.pipe.vae.device))
        out = {"z_src": inputs.source[0], "z_tgt": z_tgt[0], "prompt_embeds": c["prompt_embeds"][0],
               "pooled": c["pooled"][0], "text_ids": c["text_ids"], "latent_ids": c["latent_ids"],
               "source_ids": c["source_ids"]}
        if c["guidance"] is not None:
            out["guidance"] = c["guidance"]
        return {k: v.detach().float().cpu() for k, v in out.items()}

    def call_count(self, samples: Sequence[dict[str, Any]]) -> int:
        return 1

    def losses(self, model: torch.nn.Module, samples: Sequence[dict[str, Any]], draws: Draws,
               device: torch.device) -> Iterator[tuple[torch.Tensor, int]]:
        """One call for the whole micro-batch: (mean loss, samples it covers)."""
        def stack(key: str) -> torch.Tensor:
            return torch.stack([s[key] for s in samples]).to(device)

        first = samples[0]
        keep = None
        if draws.keep[0] is not None:
            keep = torch.stack(draws.keep)
        guidance = first["guidance"].expand(len(samples)).to(device) if "guidance" in first else None
        loss = T.flow_matching_loss(
            model, stack("z_src"), stack("z_tgt"), stack("prompt_embeds"), stack("pooled"),
            first["text_ids"].to(device), first["latent_ids"].to(device), first["source_ids"].to(device),
            draws.sigmas.to(device), torch.stack(draws.noise).to(device), keep=keep, guidance=guidance,
            edit_weight=self.edit_weight)
        yield loss, len(samples)
