"""Speed of each policy on a benchmark-size model of the real classes, A/B against `full` in the same run.

Every repetition runs every policy once, in an order rotated by one per repetition, so that `full` and each
policy are measured next to each other in time; the speedup of a repetition is full's time over the
policy's time in that repetition. Times: the denoising loop (sum of `StepTrace.seconds`: transformer,
sampler, policy) and the whole edit (plus text encoding, VAE encode/decode), reported separately because the
papers' speedups are about the loop and a CPU-sized VAE is not a GPU-sized one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import PIL.Image
import torch

from core.assignments import parse_inline

from .families import check_family

INSTRUCTION = "make the circle red"


@dataclass(frozen=True)
class PolicySpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}:{args}" if args else self.name


def parse_policy(text: str) -> PolicySpec:
    """`name` or `name:k=v,k=v` (values parsed as YAML)."""
    name, _, rest = text.partition(":")
    if not name.strip():
        raise ValueError(f"--policy expects name[:key=value,...], got {text!r}")
    return PolicySpec(name.strip(), parse_inline(rest))


def default_policies(registry: dict[str, type]) -> list[PolicySpec]:
    """Every registered policy with its defaults: new policies join the benchmark without a code change."""
    return [PolicySpec(name) for name in registry]


REGISTERED = "registered"   # a --policy that stands for every registered policy with its defaults
# With no --policy, next to every registered policy as it decides: ToPi deciding on a shallow benchmark model
# (its default exempts 10 layers), and every mechanism forced to skip at the papers' operating points
# (bench/forced.py; routing from layer 1 fits any model of 2 layers or more), so that SpotEdit and ToPi are
# timed while they really skip even on random weights.
DEFAULT_VARIANTS = ("topi:exempt_layers=1,layers=last", "forced-gather:keep=0.5",
                    "forced-topi:keep=0.5,from_layer=1", "forced-topi:keep=0.5,from_layer=1,interval=3",
                    "forced-spotedit:active=0.5", "forced-spotedit:active=0.2,selector=true")


def policy_specs(labels: Sequence[str], registry: dict[str, type]) -> list[PolicySpec]:
    """The `--policy` labels parsed, `registered` expanded; none given: every registered policy, then
    `DEFAULT_VARIANTS`."""
    specs: list[PolicySpec] = []
    for label in labels:
        specs += default_policies(registry) if label.strip() == REGISTERED else [parse_policy(label)]
    return specs if labels else default_policies(registry) + [parse_policy(v) for v in DEFAULT_VARIANTS]


def build_bench_pipeline(family: str, layers: int, single_layers: int, heads: int, head_dim: int,
                         device: torch.device, dtype: torch.dtype) -> Any:
    """The tiny pipeline of the real classes with a benchmark-size transformer (text encoders and VAE tiny)."""
    from actors import tiny_models

    check_family(family)
    with _built_on(device, dtype):
        if family == "flux":
            pipe = tiny_models.build_tiny_flux_kontext(num_layers=layers, num_single_layers=single_layers,
                                                       num_attention_heads=heads, attention_head_dim=head_dim)
        elif family in ("flux2", "flux2-kv"):
            build = tiny_models.build_tiny_flux2_klein_kv if family == "flux2-kv" else \
                tiny_models.build_tiny_flux2_klein
            pipe = build(num_layers=layers, num_single_layers=single_layers, num_attention_heads=heads,
                         attention_head_dim=head_dim)
        else:
            pipe = tiny_models.build_tiny_qwen_image_edit(plus=family == "qwen-plus",
                                                          num_layers=layers + single_layers,
                                                          num_attention_heads=heads, attention_head_dim=head_dim)
    if pipe.transformer.dtype != dtype:   # (a same-dtype cast only makes diffusers warn)
        pipe = pipe.to(dtype=dtype)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def _built_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """On CUDA, parameters are created on the GPU in the run's dtype: a real-size model (12 B, 20 B parameters)
    is never materialised in fp32 on the host. On CPU nothing changes (the models built bit for bit as before)."""
    if device.type != "cuda":
        yield
        return
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(before)


def bench_image(size: int, seed: int = 0) -> PIL.Image.Image:
    """A smooth gradient with a few discs: structure for the VAE and for residual-based policies."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([x, y, 0.5 * (x + y)], -1) * 200 + 20
    for _ in range(3):
        cx, cy, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.08, 0.2)]
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.integers(0, 255, 3)
    return PIL.Image.fromarray(img.clip(0, 255).astype(np.uint8))


def reference_images(size: int, count: int, seed: int = 0) -> list[PIL.Image.Image]:
    """The references after the edited image (count − 1 of them), each its own picture. Edit-Plus encodes them
    at ~1024² area whatever their size, as diffusers does."""
    return [bench_image(size, seed + i) for i in range(1, count)]


def trace_rows(trace: list[Any], cpu_seconds: Sequence[float | None] = ()) -> list[dict[str, Any]]:
    cpu = list(cpu_seconds) + [None] * (len(trace) - len(cpu_seconds))
    return [{"kept": s.kept, "total": s.total, "noisy": s.noisy, "from_layer": s.from_layer,
             "active": s.active, "keys": getattr(s, "keys", None), "seconds": s.seconds, "cpu_seconds": c,
             "policy_seconds": s.policy_seconds, "selector_seconds": s.selector_seconds,
             **_cache_rows(s)} for s, c in zip(trace, cpu)]


def _cache_rows(step: Any) -> dict[str, Any]:
    """A temporal cache's calls of the step (actors.edit_result.CacheCall), when one ran: what costs.flops prices."""
    calls = getattr(step, "cache_calls", ())
    return {"cache_calls": [dataclasses.asdict(c) for c in calls]} if calls else {}


def step_cpu_seconds(start: float, ends: Sequence[float]) -> list[float]:
    """Process CPU time of every step, from the loop's start and the CPU clock at the end of each step."""
    marks = [start, *ends]
    return [b - a for a, b in zip(marks, marks[1:])]


def source_cached(policy: Any) -> bool:
    """Does the policy serve the source tokens' K/V from a cache in partial steps (SpotEdit's condition cache)?"""
    context = policy.needs.query_skip
    return context is not None and context.source


def one_edit(pipe: Any, policy: Any, image: PIL.Image.Image, size: int, steps: int, seed: int,
             references: Sequence[PIL.Image.Image] = ()) -> dict[str, Any]:
    import actors

    timed = TimedPolicy(policy)
    editor = actors.Editor(pipe, timed)
    cuda = pipe.transformer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(pipe.transformer.device)
    step_cpu: list[float] = []
    cpu0 = time.process_time()
    result = editor.edit(image, INSTRUCTION, seed=seed, steps=steps, height=size, width=size,
                         references=references, on_step=lambda _: step_cpu.append(time.process_time()))
    edit_cpu = time.process_time() - cpu0
    loop = sum(s.seconds for s in result.trace)
    plan_observe = sum(s.policy_seconds for s in result.trace)
    outside = max(0.0, sum(s.selector_seconds for s in result.trace) - timed.scoring_seconds)
    # process CPU time (all threads): on a shared CPU it grows far less with other work than wall time does
    return {"edit_s": result.seconds, "loop_s": loop, "edit_cpu_s": edit_cpu,
            "loop_cpu_s": step_cpu[-1] - timed.loop_cpu_start, "policy_s": plan_observe + outside,
            "plan_observe_s": plan_observe, "scoring_outside_s": outside, "keep_ratio": result.keep_ratio_mean,
            "active_ratio": statistics.mean(s.noisy and (s.noisy if s.active is None else s.active) / s.noisy
                                            for s in result.trace),
            "text_tokens": list(result.text_tokens), "source_cached": result.source_cached,
            "peak_memory_gb": torch.cuda.max_memory_allocated(pipe.transformer.device) / 2**30 if cuda else None,
            "trace": trace_rows(result.trace, step_cpu_seconds(timed.loop_cpu_start, step_cpu))}


class TimedPolicy:
    """The policy, unchanged, except that the editor's token scorer (`RunInfo.token_scores`) is timed and
    the process CPU time at the first plan (the loop's start) is noted.

    StepTrace.selector_seconds holds scoring done outside plan/observe (ToPi's attention statistics) and
    scoring done inside observe (SpotEdit's selector, then also in policy_seconds); timing the scorer here
    separates the two, so that nothing is counted twice in the policy's overhead."""

    def __init__(self, policy: Any) -> None:
        self._policy = policy
        self.scoring_seconds = 0.0
        self.loop_cpu_start: float | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)

    def start(self, run: Any) -> Any:
        score = getattr(run, "token_scores", None)
        if callable(score):
            def timed(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return score(*args, **kwargs)
                finally:
                    self.scoring_seconds += time.perf_counter() - t0
            run = dataclasses.replace(run, token_scores=timed)
        return _TimedRun(self._policy.start(run), self)


class _TimedRun:
    def __init__(self, run: Any, owner: TimedPolicy) -> None:
        self._run, self._owner = run, owner

    def __getattr__(self, name: str) -> Any:   # summary(), replace_with_source(), ... as the policy has them
        return getattr(self._run, name)

    def plan(self, step: Any) -> Any:
        if self._owner.loop_cpu_start is None:
            self._owner.loop_cpu_start = time.process_time()
        return self._run.plan(step)

    def observe(self, step: Any, seen: Any) -> None:
        self._run.observe(step, seen)


def build_policies(pipe: Any, specs: list[PolicySpec]) -> tuple[dict[str, Any], dict[str, str]]:
    """Every spec built (a registered policy or a forced one), and the reason for each that cannot be built or
    that the pipeline's family refuses (FLUX.2: SpotEdit's query skip, ToPi's layer routing; klein KV: attention
    statistics), found before any edit rather than by a failing one."""
    from actors.models import family_of

    from .forced import make

    family, pipeline = family_of(pipe), type(pipe).__name__
    built, skipped = {}, {}
    for spec in specs:
        try:
            built[spec.label] = make(spec.name, **spec.params)
        except (ValueError, TypeError) as err:
            skipped[spec.label] = f"cannot be built: {err}"
            continue
        refusal = family.refusal(spec.name, built[spec.label].needs, pipeline)
        if refusal:
            skipped[spec.label] = f"refused: {refusal}"
    return built, skipped


def measure(pipe: Any, specs: list[PolicySpec], sizes: list[int], steps: int, reps: int, seed: int = 0,
            log: Callable[[str], None] = print, references: tuple[int, ...] = (1,)) -> dict[str, Any]:
    """Edits per (size, reference count, policy, repetition), with the reason for every policy that could
    not run. Within a repetition every reference count is measured in turn, so that the single- and the
    multi-reference speedups are taken close together in time."""
    import policies

    built, skipped = build_policies(pipe, specs)
    edits: list[dict[str, Any]] = []
    for size in sizes:
        image = bench_image(size, seed)
        refs = {n: reference_images(size, n, seed) for n in references}
        if size == sizes[0]:
            # one untimed edit (library loading, kernel selection); the A/B pairing absorbs what is left
            warm = time.perf_counter()
            one_edit(pipe, policies.make("full"), image, size, 1, seed, refs[max(references)])
            log(f"{size}²: warm-up {time.perf_counter() - warm:.1f} s")
        for rep in range(reps):
            for count in references:
                labels = [label for label in built if label not in skipped]
                shift = rep % max(1, len(labels))
                for label in labels[shift:] + labels[:shift]:
                    where = f"{size}²" + (f" ×{count} refs" if references != (1,) else "")
                    try:
                        row = one_edit(pipe, built[label], image, size, steps, seed, refs[count])
                    except Exception as err:  # noqa: BLE001 - a policy that fails on this model is reported, not fatal
                        skipped[label] = f"failed at {where}: {type(err).__name__}: {err}"
                        log(f"{where} {label}: skipped ({skipped[label]})")
                        continue
                    edits.append({"size": size, "references": count, "policy": label, "rep": rep, **row})
                    log(f"{where} rep {rep} {label}: loop {row['loop_s']:.2f} s, edit {row['edit_s']:.2f} s, "
                        f"keep {row['keep_ratio']:.2f}")
    return {"edits": edits, "skipped": skipped, "policies": [s.label for s in specs]}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}
