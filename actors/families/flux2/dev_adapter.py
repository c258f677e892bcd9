"""FLUX.2 [dev] (any Flux2Pipeline) through diffusers: klein's adapter with dev's text encoder, guidance and schedule.

What Flux2Pipeline (diffusers 0.42, pipelines/flux2/pipeline_flux2.py) does differently from Flux2KleinPipeline,
and where this adapter follows it:
- prompt: `encode_prompt` stacks Mistral3's hidden states of layers (10, 20, 30) of the chat-templated
  instruction, system message `SYSTEM_MESSAGE`, padded to max_sequence_length 512; we call that very method
  with its defaults (`Flux2Adapter._encode`);
- guidance: guidance-distilled, no CFG and no negative prompt; `guidance_scale` goes into the transformer's
  guidance embedding as `torch.full([1], guidance_scale, dtype=float32)`, once per call;
- schedule: sigmas linspace(1, 1/steps, steps) (none when the scheduler uses flow sigmas) and the empirical mu
  of pipeline_flux2's own `compute_empirical_mu`, through its `retrieve_timesteps`;
- references: the same sizing and preprocessing as klein's (`references`: over 1024² resized to that area,
  floored to multiples of 16, center-cropped), the same latents, ids and reference encoding (`prepare_latents`,
  `prepare_image_latents`: noise first, then the references, from one generator).

Defaults, from `Flux2Pipeline.__call__`'s signature: num_inference_steps=50, guidance_scale=4.0 (its docstring
says "defaults to 1.0" and its example passes 2.5 with 50 steps; the signature is what a call without them runs).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers.pipelines.flux2 import pipeline_flux2

from .adapter import Flux2Adapter
from ..protocols import FLUX2_DEV_PROTOCOL


def dev_schedule(pipe: Any, image_seq_len: int, steps: int, device: Any) -> tuple[Any, torch.Tensor]:
    """A scheduler no other edit touches, set up as Flux2Pipeline.__call__ (step 6) does."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sigmas = None if getattr(scheduler.config, "use_flow_sigmas", False) else np.linspace(1.0, 1 / steps, steps)
    mu = pipeline_flux2.compute_empirical_mu(image_seq_len=image_seq_len, num_steps=steps)
    timesteps, _ = pipeline_flux2.retrieve_timesteps(scheduler, steps, device, sigmas=sigmas, mu=mu)
    scheduler.set_begin_index(0)
    return scheduler, timesteps


class Flux2DevAdapter(Flux2Adapter):
    default_steps = FLUX2_DEV_PROTOCOL.steps   # as data in `protocols` (the driver reads it without torch)
    default_guidance = FLUX2_DEV_PROTOCOL.guidance
    resize_filter = FLUX2_DEV_PROTOCOL.resize_filter

    def _negative(self, gs: float, max_sequence_length: int, device: Any) -> None:
        return None   # guidance-distilled: Flux2Pipeline has no CFG branch

    def _guidance(self, gs: float, device: Any) -> torch.Tensor:
        return torch.full([1], gs, device=device, dtype=torch.float32)

    def _schedule(self, image_seq_len: int, steps: int, device: Any) -> tuple[Any, torch.Tensor]:
        return dev_schedule(self.pipe, image_seq_len, steps, device)
