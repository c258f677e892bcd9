"""Shared by the SpotEdit tests: one family's transformer run through the adapter on the rows the routing seam
gathers from layer 0, and the median selector score a probe edit saw (a threshold that splits the tiny model's
tokens in two)."""
import torch

import actors
from actors import spot_selector
from actors.models import family
from actors.routing import Routing, routed_blocks
from actors.spot_attention import SpotKV

PROMPT = "make the circle red"


class Model:
    """One family's transformer with prepared inputs, run through the adapter on a subset of image rows
    gathered from layer 0 by the routing seam (hidden rows, rotary rows, Qwen's `modulate_index`)."""

    def __init__(self, pipe, image):
        self.pipe = pipe
        self.adapter = actors.Editor(pipe, None).adapter
        self.inputs = self.adapter.prepare([image], PROMPT, seed=3, steps=4, guidance_scale=None, height=64,
                                           width=96)
        self.family = self.adapter.family
        self.n, self.s = self.inputs.latents.shape[1], self.inputs.source.shape[1]
        self.t = self.inputs.timesteps[1]

    def kv(self, **flags):
        table = family(self.family).key_rotary(self.pipe.transformer, self.inputs.cond, self.inputs.latents.device)
        return SpotKV(num_noisy=self.n, num_source=self.s, key_rotary=table, **flags)

    def __call__(self, active=None, source=True):
        """Velocity of the noisy rows that entered (all if `active` is None), as the adapter returns it
        (Qwen: true CFG, so both the cond and the uncond branch run)."""
        rows = torch.arange(self.n) if active is None else active
        src = torch.arange(self.s) if source else torch.arange(0)
        routing = Routing(family=self.family, num_noisy=self.n)
        with torch.no_grad(), self.adapter.attach(self.inputs), routed_blocks(self.pipe.transformer, routing):
            if active is not None or not source:
                routing.set(torch.cat([rows, self.n + src]), from_layer=0)
            return self.adapter.velocity(self.inputs, self.inputs.latents, self.t, None)[:, : rows.numel()]


def median_score(monkeypatch, pipe, image, size, steps, policy):
    """The median selector score the last scored step of a probe edit under `policy` saw."""
    seen = []
    original = spot_selector.TimedScorer.__call__

    def spy(self, x0, metric="lpips_vae"):
        seen.append(original(self, x0, metric))
        return seen[-1]

    with monkeypatch.context() as m:
        m.setattr(spot_selector.TimedScorer, "__call__", spy)
        actors.Editor(pipe, policy).edit(image, PROMPT, steps=steps, height=size, width=size)
    return float(seen[-1].median())
