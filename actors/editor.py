"""Our own sampling loop over a diffusers editing pipeline: the policy chooses the source tokens of each
step, the adapter runs the transformer on them, the regularized sampler takes the step."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import PIL.Image
import torch
from diffusers import FluxKontextPipeline, QwenImageEditPipeline, QwenImageEditPlusPipeline

from policies import Policy, RunInfo, Seen, Step

from .active_noisy import ActiveNoisy
from .adapter import EditInputError, ModelAdapter
from .architecture import describe
from .attention_stats import AttentionCollector, collecting_attention
from .flux_kontext import FluxKontextAdapter
from .model_defaults import defaults_of
from .qwen_image_edit import QwenImageEditAdapter
from .results import EditResult, StepTrace
from .routing import Routing, routed_blocks
from .sampler import clean_estimate, regularized_step
from .spot_selector import TimedScorer


def adapter_for(pipe: Any) -> ModelAdapter:
    if isinstance(pipe, FluxKontextPipeline):
        return FluxKontextAdapter(pipe)
    if isinstance(pipe, (QwenImageEditPipeline, QwenImageEditPlusPipeline)):
        return QwenImageEditAdapter(pipe)
    raise TypeError(f"unsupported pipeline {type(pipe).__name__}; accepted: FluxKontextPipeline, "
                    "QwenImageEditPipeline, QwenImageEditPlusPipeline")


def open_image(image: PIL.Image.Image | str | Path) -> PIL.Image.Image:
    if isinstance(image, PIL.Image.Image):
        return image.convert("RGB")
    try:
        with PIL.Image.open(image) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as err:
        raise EditInputError(f"cannot read image {str(image)!r}: {err}") from err


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _split_masks(keep: torch.Tensor | None, grids: Sequence[tuple[int, int]]) -> tuple[np.ndarray, ...]:
    out, start = [], 0
    for h, w in grids:
        part = np.ones((h, w), bool) if keep is None else keep[start: start + h * w].cpu().numpy().reshape(h, w)
        out.append(part)
        start += h * w
    return tuple(out)


class Editor:
    """Edits images with one pipeline and one policy. Holds no per-edit state between calls."""

    def __init__(self, pipe: Any, policy: Policy) -> None:
        self.pipe = pipe
        self.policy = policy
        self.adapter = adapter_for(pipe)
        self.defaults = defaults_of(pipe)   # what the model's saved files say (toy model: 32 tokens, 128x128)

    def _sizes(self, height: int | None, width: int | None, notes: list[str]) -> tuple[int | None, int | None]:
        """The model's own size when none is asked for; a note when the asked size is outside its training."""
        if height is None and width is None and self.defaults.default_size is not None:
            return self.defaults.default_size
        if height is not None and width is not None:
            problem = self.defaults.size_problem(int(height), int(width))
            if problem:
                notes.append(problem)
        return height, width

    @torch.no_grad()
    def edit(self, image: PIL.Image.Image | str | Path, instruction: str, *, seed: int = 0, steps: int = 28,
             guidance_scale: float | None = None, height: int | None = None, width: int | None = None,
             references: Sequence[PIL.Image.Image | str | Path] = (), max_sequence_length: int | None = None,
             on_step: Callable[[StepTrace], None] | None = None) -> EditResult:
        """One edit. `max_sequence_length` (text tokens) defaults to the model's saved default, else
        diffusers' 512; `height`/`width` to the model's trained size, else the adapter's (Kontext: its
        preferred resolution of the image's aspect)."""
        if not isinstance(instruction, str) or not instruction.strip():
            raise EditInputError("the instruction is empty")
        if int(steps) < 1:
            raise EditInputError(f"steps must be >= 1, got {steps}")
        images = [open_image(image)] + [open_image(r) for r in references]
        started = time.perf_counter()
        notes: list[str] = []
        height, width = self._sizes(height, width, notes)
        inputs = self.adapter.prepare(images, instruction, seed=int(seed), steps=int(steps),
                                      guidance_scale=guidance_scale, height=height, width=width,
                                      max_sequence_length=int(max_sequence_length or
                                                              self.defaults.max_sequence_length))
        inputs.notes[:0] = notes
        device = inputs.latents.device
        transformer = self.pipe.transformer
        arch = describe(transformer)
        scorer = TimedScorer(self.pipe, self.adapter.family, inputs.height, inputs.width, inputs.aligned_source[0])
        run = RunInfo(family=self.adapter.family, noisy_grid=inputs.noisy_grid,
                      source_grids=inputs.source_grids, steps=len(inputs.timesteps),
                      sigmas=inputs.sigmas.detach().cpu(), seed=int(seed), device=device,
                      num_layers=arch["num_layers"], architecture=arch["class"], config_hash=arch["config_hash"],
                      token_scores=scorer)
        policy_run = self.policy.start(run)
        spot = ActiveNoisy(transformer, self.adapter.family, inputs, getattr(self.policy, "context", None))
        sigmas = [float(s) for s in inputs.sigmas]
        total, num_noisy = run.num_source, run.num_noisy
        source = inputs.source[0]
        aligned = inputs.aligned_source
        routing = Routing(family=self.adapter.family, num_noisy=num_noisy)
        collector = AttentionCollector(num_noisy=num_noisy)
        z, trace = inputs.latents, []
        with self.adapter.attach(inputs), spot.attached(), routed_blocks(transformer, routing), \
                collecting_attention(transformer, self.adapter.family, collector):
            for i, t in enumerate(inputs.timesteps):
                step = Step(index=i, sigma=sigmas[i], sigma_next=sigmas[i + 1])
                t0 = time.perf_counter()
                plan = policy_run.plan(step)
                keep = plan.keep_source
                policy_seconds = time.perf_counter() - t0
                kept = None if keep is None or bool(keep.all()) else torch.nonzero(keep).flatten().to(device)
                index, from_layer = kept, 0
                if kept is not None and plan.from_layer > 0:
                    # ToPi Mode B: every token through the first layers, the kept ones after
                    rows = torch.cat([torch.arange(num_noisy, device=device), kept + num_noisy])
                    routing.set(rows, plan.from_layer, plan.merge)
                    index, from_layer = None, plan.from_layer
                else:
                    routing.clear()
                if spot.route(plan, routing, kept, device):
                    index = None   # SpotEdit: active noisy tokens (and their positions) from layer 0
                collector.request(plan.attention_layers)
                v = spot.velocity(self.adapter.velocity(inputs, z, t, index))
                attention, stats_seconds = collector.take()
                x0 = clean_estimate(z, v, step.sigma)
                euler = inputs.scheduler.step(v, t, z, return_dict=False)[0]
                dropped = None if kept is None else ~keep[:num_noisy].to(device)
                z = regularized_step(euler, x0, aligned, dropped, step.sigma, step.sigma_next,
                                     self.policy.regularize)
                _synchronize(device)   # so that the policy's time is its own, not the transformer's
                t1 = time.perf_counter()
                policy_run.observe(step, Seen(x0=x0[0], source=source, velocity=v[0], attention=attention))
                _synchronize(device)
                t2 = time.perf_counter()
                policy_seconds += t2 - t1
                entry = StepTrace(index=i, sigma=step.sigma, kept=total if kept is None else int(kept.numel()),
                                  total=total, seconds=t2 - t0, policy_seconds=policy_seconds,
                                  keep_masks=_split_masks(None if kept is None else keep, inputs.source_grids),
                                  from_layer=from_layer, noisy=num_noisy, active=spot.active, keys=spot.keys,
                                  active_mask=spot.active_mask(inputs.noisy_grid),
                                  selector_seconds=stats_seconds + scorer.take())
                trace.append(entry)
                if on_step is not None:
                    on_step(entry)
        routing.clear()
        z = spot.replace(z, aligned, getattr(policy_run, "replace_with_source", lambda: None)())
        pixels = self.adapter.decode(inputs, z)
        _synchronize(device)
        return EditResult(image=self.pipe.image_processor.numpy_to_pil(pixels[None])[0], pixels=pixels, trace=trace, height=inputs.height, width=inputs.width,
                          seconds=time.perf_counter() - started, latents=z[0].float().cpu(),
                          source_latents=aligned[0].float().cpu(), notes=inputs.notes,
                          policy_summary=dict(getattr(policy_run, "summary", dict)()),
                          policy_params=policy_run.applied())
