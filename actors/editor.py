"""Our own sampling loop over a diffusers editing pipeline: prepare → step → finish.

Each step the policy plans, the mechanisms of the edit (`actors.mechanisms`: those its policy declared, and
the temporal cache the policy or the edit asked for) turn the plan into what the transformer call does, the adapter runs the transformer on the chosen tokens, the regularized
sampler takes the step and the policy observes x̂0. Everything of one edit lives on its `EditState`."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import PIL.Image
import torch

from policies import Policy, PolicyRun, RunInfo, Seen, Step

from .adapter import EditInputError, EditInputs, ModelAdapter
from .architecture import describe
from .attention_backend import backend_label
from .caches import CacheError, CacheSpec
from .caches import parse as parse_cache
from .mechanisms import EditContext, Mechanism, StepCall, check_plan, mechanisms_for
from .models import family_of
from .model_defaults import defaults_of
from actors.edit_result import EditResult, StepTrace
from .routing import Routing, routed_blocks
from .sampler import clean_estimate, regularized_step
from .spot_selector import TimedScorer
from .spot_attention import STORES as KV_STORES
from .shape_buckets import ShapeBuckets
from .step_clock import StepClock
from .text_encoders import encoders_on_card, placement_of
from .text_lengths import text_lengths


def adapter_for(pipe: Any) -> ModelAdapter:
    return family_of(pipe).adapter_class(type(pipe))(pipe)


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


@dataclass
class EditState:
    """Everything one edit holds between its steps; nothing of it outlives the edit."""

    inputs: EditInputs
    run: RunInfo
    policy_run: PolicyRun
    mechanisms: list[Mechanism]
    routing: Routing
    scorer: TimedScorer | None
    transformer: torch.nn.Module
    started: float
    clock: StepClock
    trace: list[StepTrace] = field(default_factory=list)
    text_tokens: tuple[int, ...] = ()   # text tokens of each call of a step (what the cost model prices)
    encoder_move_s: float = 0.0         # moving offloaded text encoders to the card (`actors.text_encoders`)

    @contextlib.contextmanager
    def attached(self, adapter: ModelAdapter) -> Iterator[None]:
        """Every mechanism's hooks (those that attach first before the others), the adapter's, and the routing
        hooks where a mechanism routes; all removed when the edit ends, whatever happens."""
        with contextlib.ExitStack() as stack:
            for mechanism in (m for m in self.mechanisms if m.attaches_first):
                stack.enter_context(mechanism.attached())
            stack.enter_context(adapter.attach(self.inputs))
            if any(m.uses_routing for m in self.mechanisms):
                stack.enter_context(routed_blocks(self.transformer, self.routing))
            for mechanism in (m for m in self.mechanisms if not m.attaches_first):
                stack.enter_context(mechanism.attached())
            yield
        self.routing.clear()


class Editor:
    """Edits images with one pipeline and one policy. Holds no per-edit state between calls."""

    def __init__(self, pipe: Any, policy: Policy, kv_store: str = "compute",
                 bucket: ShapeBuckets | int | str | None = None) -> None:
        """`kv_store`: SpotEdit's K/V buffers in the compute dtype or int8 (actors.kv_int8); `bucket`: kept and
        active token counts rounded up to multiples of it (tokens or a share "25%", actors.shape_buckets), so
        that compiled blocks see a bounded number of shapes; None or 0: off."""
        if kv_store not in KV_STORES:
            raise EditInputError(f"kv_store must be one of {', '.join(KV_STORES)}, got {kv_store!r}")
        self.pipe = pipe
        self.policy = policy
        self.kv_store = kv_store
        self.buckets = bucket if isinstance(bucket, ShapeBuckets) else ShapeBuckets(bucket=bucket or 0)
        self.family = family_of(pipe)         # its record, not the adapter's tag: a family may reuse an adapter
        self.adapter = self.family.adapter_class(type(pipe))(pipe)
        self.defaults = defaults_of(pipe)   # what the model's saved files say (toy model: 32 tokens, 128x128)

    @property
    def default_steps(self) -> int:
        """Steps when an edit gives none: the model's saved default, else the family's paper protocol."""
        return self.defaults.steps or self.adapter.default_steps

    @property
    def default_guidance(self) -> float:
        return self.adapter.default_guidance

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
    def edit(self, image: PIL.Image.Image | str | Path, instruction: str, *, seed: int = 0, steps: int | None = None,
             guidance_scale: float | None = None, height: int | None = None, width: int | None = None,
             references: Sequence[PIL.Image.Image | str | Path] = (), max_sequence_length: int | None = None,
             resize_filter: str | None = None, on_step: Callable[[StepTrace], None] | None = None,
             cache: CacheSpec | str | dict | None = None) -> EditResult:
        """One edit. `steps` and `guidance_scale` default to the family's paper protocol (Kontext 28 steps,
        guidance 3.5; Qwen-Image-Edit 50 steps, true CFG 4.0); `max_sequence_length` (text tokens) to the
        model's saved default, else diffusers' 512; `resize_filter` (PIL name) to the family's (Kontext
        bicubic, Qwen Lanczos); `height`/`width` to the model's trained size, else the
        adapter's (Kontext: its preferred resolution of the image's aspect). `cache`: a temporal cache composed
        with the policy (`actors.caches`: a spec, "name:k=v,..." or {"name": ..., ...}); None = the one the
        policy's `needs.cache` declares, if any."""
        if not isinstance(instruction, str) or not instruction.strip():
            raise EditInputError("the instruction is empty")
        steps = self.default_steps if steps is None else steps
        if int(steps) < 1:
            raise EditInputError(f"steps must be >= 1, got {steps}")
        cache = self._cache(cache)
        self._refuse(cache, int(steps))
        images = [open_image(image)] + [open_image(r) for r in references]
        started = time.perf_counter()
        notes: list[str] = []
        height, width = self._sizes(height, width, notes)
        moves: list[float] = []
        with encoders_on_card(self.pipe, moves):   # offloaded text encoders come to the card for the prompt only
            inputs = self.adapter.prepare(images, instruction, seed=int(seed), steps=int(steps),
                                          guidance_scale=guidance_scale, height=height, width=width,
                                          max_sequence_length=int(max_sequence_length or
                                                                  self.defaults.max_sequence_length),
                                          resize_filter=resize_filter)
        inputs.notes[:0] = notes
        state = self._prepare(inputs, int(seed), started, cache,
                              StepClock(inputs.latents.device, live=on_step is not None))
        state.encoder_move_s = sum(moves)
        z = inputs.latents
        with state.attached(self.adapter), text_lengths(self.pipe.transformer) as texts:
            for i, t in enumerate(inputs.timesteps):
                z = self._step(state, i, t, z)
                if on_step is not None:
                    on_step(state.trace[-1])
        state.text_tokens = tuple(texts[: len(texts) // max(1, len(state.trace))])
        return self._finish(state, z)

    def _cache(self, asked: CacheSpec | str | dict | None) -> CacheSpec | None:
        """The edit's temporal cache: the one asked for, else the policy's; both, unless equal, are refused
        (one cache per edit). Parsed here, so that a bad spec is refused before any model work."""
        asked, declared = parse_cache(asked), parse_cache(self.policy.needs.cache)
        if asked is not None and declared is not None and asked != declared:
            raise CacheError(f"policy {self.policy.name!r} runs cache {declared.label()!r}; the edit asks for "
                             f"{asked.label()!r} too: one cache per edit")
        return asked if asked is not None else declared

    def _refuse(self, cache: CacheSpec | None, steps: int) -> None:
        """A policy whose mechanisms this family (or pipeline) cannot run, or a cache that cannot run it at
        these steps, is refused before any model work."""
        refusal = self.family.refusal(self.policy.name, self.policy.needs, type(self.pipe).__name__)
        if refusal:
            raise EditInputError(refusal)
        refusal = None if cache is None else cache.refusal(self.family.name, steps)
        if refusal:
            raise CacheError(refusal)

    def _prepare(self, inputs: EditInputs, seed: int, started: float, cache: CacheSpec | None,
                 clock: StepClock) -> EditState:
        """The policy's run and the mechanisms of the edit (the cache's among them), for this edit only."""
        transformer, family, needs = self.pipe.transformer, self.family.name, self.policy.needs
        arch = describe(transformer)
        scorer = TimedScorer(self.pipe, family, inputs.height, inputs.width, inputs.aligned_source[0]) \
            if needs.token_scores else None
        run = RunInfo(family=family, noisy_grid=inputs.noisy_grid, source_grids=inputs.source_grids,
                      steps=len(inputs.timesteps), sigmas=inputs.sigmas.detach().cpu(), seed=seed,
                      device=inputs.latents.device, num_layers=arch["num_layers"], architecture=arch["class"],
                      config_hash=arch["config_hash"], model=arch["model"], token_scores=scorer,
                      paper=self.family.paper)
        policy_run = self.policy.start(run)
        routing = Routing(family=family, num_noisy=run.num_noisy)
        edit = EditContext(run=run, needs=needs, transformer=transformer, inputs=inputs, routing=routing,
                           policy_run=policy_run, kv_store=self.kv_store)
        mechanisms = mechanisms_for(edit, cache, self.buckets)
        return EditState(inputs, run, policy_run, mechanisms, routing, scorer, transformer, started, clock)

    def _step(self, state: EditState, i: int, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Plan, call the transformer through the mechanisms, take the (regularized) step, observe."""
        inputs, sigmas, device = state.inputs, state.run.sigmas, z.device
        step = Step(index=i, sigma=float(sigmas[i]), sigma_next=float(sigmas[i + 1]))
        start = state.clock.stamp()
        plan = state.policy_run.plan(step)
        check_plan(plan, self.policy.needs, self.policy.name)
        keep = plan.keep_source
        plan_seconds = time.perf_counter() - start.host
        kept = None if keep is None or bool(keep.all()) else torch.nonzero(keep).flatten().to(device)
        call = StepCall(plan=plan, kept=kept, input_index=kept, index=i)
        state.routing.clear()
        for mechanism in state.mechanisms:
            mechanism.before_call(call)
        v = self.adapter.velocity(inputs, z, t, call.input_index)
        for mechanism in state.mechanisms:
            v = mechanism.after_call(call, v)
        x0 = clean_estimate(z, v, step.sigma)
        euler = inputs.scheduler.step(v, t, z, return_dict=False)[0]
        dropped = None if kept is None else ~keep[: state.run.num_noisy].to(device)
        z = regularized_step(euler, x0, inputs.aligned_source, dropped, step.sigma, step.sigma_next,
                             self.policy.regularize)
        observing = state.clock.stamp()   # so that the policy's time is its own, not the transformer's
        state.policy_run.observe(step, Seen(x0=x0[0], source=inputs.source[0], velocity=v[0],
                                            attention=call.attention))
        state.clock.record(state.trace, self._trace(state, call, step), start, observing, state.clock.stamp(),
                           plan_seconds)
        return z

    @staticmethod
    def _trace(state: EditState, call: StepCall, step: Step) -> StepTrace:
        """The step's record; its times are filled by the edit's clock (at once, or when the edit settles)."""
        total = state.run.num_source
        scoring = state.scorer.take() if state.scorer is not None else 0.0
        return StepTrace(index=step.index, sigma=step.sigma, kept=total if call.kept is None else int(call.kept.numel()),
                         total=total, seconds=0.0, policy_seconds=0.0,
                         keep_masks=_split_masks(None if call.kept is None else call.plan.keep_source,
                                                 state.inputs.source_grids),
                         from_layer=call.from_layer, noisy=state.run.num_noisy, active=call.active, keys=call.keys,
                         active_mask=call.active_mask, selector_seconds=call.selector_seconds + scoring,
                         cache_calls=call.cache_calls)

    def _finish(self, state: EditState, z: torch.Tensor) -> EditResult:
        """The mechanisms' last word on the latent (SpotEdit's replacement), then decoding."""
        inputs, reported = state.inputs, {}
        for mechanism in state.mechanisms:
            z = mechanism.finish(z)
            inputs.notes.extend(mechanism.result_notes())
            reported.update(mechanism.result_fields())
        pixels = self.adapter.decode(inputs, z)
        _synchronize(z.device)
        state.clock.settle()
        return EditResult(image=self.pipe.image_processor.numpy_to_pil(pixels[None])[0], pixels=pixels,
                          trace=state.trace, height=inputs.height, width=inputs.width,
                          seconds=time.perf_counter() - state.started, latents=z[0].float().cpu(),
                          source_latents=inputs.aligned_source[0].float().cpu(), notes=inputs.notes,
                          policy_summary=dict(state.policy_run.summary()), policy_params=state.policy_run.applied(),
                          num_layers=state.run.num_layers, text_tokens=state.text_tokens,
                          text_encoders=placement_of(self.pipe), encoder_move_s=state.encoder_move_s,
                          attention_backend=backend_label(state.transformer), kv_store=self.kv_store,
                          shape_bucket=self.buckets.label(),
                          source_cached=bool(reported.pop("source_cached", False) or (
                              self.policy.needs.query_skip and self.policy.needs.query_skip.source)),
                          **reported)
