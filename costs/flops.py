"""FLOP model of one transformer call and of a whole edit, from a Flux / Qwen-Image transformer config (the
real checkpoints' configs are their families', `actors.families.*.architecture`; `costs.architectures` finds
them by model name).

What is counted (1 multiply-add = 2 FLOPs): every `nn.Linear` (projections, MLPs, embedders, the AdaLN
modulation linears on the conditioning vector) and the two attention matmuls, Q·Kᵀ and A·V. What is not:
element-wise work (norms, qk-norm, RoPE, activations, softmax, modulation, residuals, bias adds), which is
O(tokens·dim) against O(tokens·dim²) and O(tokens²·dim) for the rest.

Which tokens a layer sees, per step of a trace (`actors.edit_result.StepTrace`):
- layers before `from_layer` see every source token (ToPi's exempt layers), the others the `kept` ones;
- with `active` set (SpotEdit), only the text, the `active` noisy tokens and, unless the policy caches the
  condition image (`source_cached`), the kept source tokens are computed (projections, queries, MLP, output
  head); every layer attends to text + `keys` image tokens (StepTrace.keys; when absent: every noisy token
  and the kept source tokens, the ones without queries coming from SpotEdit's K/V cache).
Several references (Qwen-Image-Edit-Plus) are one longer source: `total` counts every reference's tokens and `kept`
what is kept of all of them (`reference_trace` builds a Sparse Context edit with a budget per reference).
The embedders run on every token passed to the transformer: ToPi and SpotEdit select rows inside it
(`actors.routing`, from block `from_layer` or 0), TokenDrop before it.

Temporal caches (`actors.caches`; a step's `cache_calls`, one per transformer call, in the order of the text
lengths: cond, then uncond): a call with `skipped_from = k` runs the embedders, blocks 0..k−1 and the output
head only (first-block: k = 1; magcache: k = 0); a call with `skipped_call` runs nothing (taylorseer's
prediction is element-wise work, not counted). `skipped_from` is a block index, so a trace of a small model
prices on the real architecture as "every block after the first" or "every block".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

TIMESTEP_CHANNELS = 256   # sinusoidal timestep features fed to TimestepEmbedding (both families)


@dataclass(frozen=True)
class Arch:
    """What the FLOP model needs of a transformer."""

    family: str              # "flux" | "qwen"
    dim: int                 # num_attention_heads * attention_head_dim
    dual_layers: int         # text and image streams with their own weights (Flux dual, all of Qwen)
    single_layers: int       # Flux single-stream blocks
    in_channels: int
    out_channels: int        # proj_out width: patch² * out_channels
    text_dim: int            # joint_attention_dim
    pooled_dim: int = 0      # Flux pooled CLIP projection; 0 = none
    guidance: bool = False   # a guidance embedder
    mlp_ratio: float = 4.0   # diffusers' FeedForward default mult and Flux single blocks' mlp_ratio
    name: str = ""
    gated_mlp: bool = False          # FLUX.2: SwiGLU MLPs, d -> 2·r·d -> (gate) r·d -> d
    shared_modulation: bool = False  # FLUX.2: one AdaLN modulation per call for all blocks, not one per block
    head_dim: int = 128              # attention_head_dim (every real checkpoint's); the roofline's RoPE tables

    @property
    def num_layers(self) -> int:
        return self.dual_layers + self.single_layers


def arch_from_config(config: Mapping[str, Any], name: str = "") -> Arch:
    """An `Arch` from a FluxTransformer2DModel / QwenImageTransformer2DModel config (dict or FrozenDict)."""
    cls = str(config.get("_class_name", ""))
    family = "flux" if "num_single_layers" in config or cls.startswith("Flux") else "qwen"
    flux2 = cls.startswith("Flux2")
    patch = int(config.get("patch_size", 1 if family == "flux" else 2))
    in_ch = int(config.get("in_channels", 64))
    out = int(config.get("out_channels") or in_ch)
    return Arch(
        family=family, dim=int(config["num_attention_heads"]) * int(config["attention_head_dim"]),
        dual_layers=int(config["num_layers"]), single_layers=int(config.get("num_single_layers", 0) or 0),
        in_channels=in_ch, out_channels=patch * patch * out, text_dim=int(config["joint_attention_dim"]),
        pooled_dim=int(config.get("pooled_projection_dim", 0) or 0) if family == "flux" else 0,
        guidance=bool(config.get("guidance_embeds", False)), name=name or cls,
        head_dim=int(config["attention_head_dim"]),
        **(dict(mlp_ratio=float(config.get("mlp_ratio", 3.0)), gated_mlp=True, shared_modulation=True)
           if flux2 else {}))


def arch_of(transformer: Any) -> Arch:
    """The `Arch` of a loaded diffusers transformer."""
    return arch_from_config({**dict(transformer.config), "_class_name": type(transformer).__name__})


def image_tokens(height: int, width: int | None = None) -> int:
    """Transformer tokens of an image: 8× VAE then 2×2 packing (Flux, Qwen) = one token per 16×16 px."""
    width = height if width is None else width
    return (height // 16) * (width // 16)


@dataclass(frozen=True)
class Flops:
    linear: float = 0.0
    attention: float = 0.0

    @property
    def total(self) -> float:
        return self.linear + self.attention

    def __add__(self, other: "Flops") -> "Flops":
        return Flops(self.linear + other.linear, self.attention + other.attention)

    def scale(self, k: float) -> "Flops":
        return Flops(self.linear * k, self.attention * k)


def linear_per_token(arch: Arch) -> float:
    """FLOPs of the token-wise linears of one layer, per computed token (same for dual and single blocks).

    Dual: q, k, v, out (4·d²) + MLP d→r·d→d (2r·d²), per stream. Single: q, k, v (3·d²) + proj_mlp (r·d²)
    + proj_out over [attn, mlp] ((1+r)·d²). Both are (4 + 2r)·d² multiply-adds. FLUX.2's gated MLP has a
    2·r·d-wide input projection: (4 + 3r)·d² in both kinds of block.
    """
    d = arch.dim
    return 2.0 * (4 + (3 if arch.gated_mlp else 2) * arch.mlp_ratio) * d * d


def layer_flops(arch: Arch, layer: int, computed: int, keys: int) -> Flops:
    """One layer: `computed` tokens get projections, queries and MLP; they attend to `keys` tokens."""
    d = arch.dim
    dual = layer < arch.dual_layers
    modulation = 0.0 if arch.shared_modulation else 2.0 * (2 * d * 6 * d if dual else d * 3 * d)   # AdaLN
    attention = 2.0 * 2 * computed * keys * d                    # Q·Kᵀ and A·V over all heads
    return Flops(linear=computed * linear_per_token(arch) + modulation, attention=attention)


def call_flops(arch: Arch, text: int, noisy: int, source: int, kept: int | None = None, from_layer: int = 0,
               active: int | None = None, keys: int | None = None, source_cached: bool = False,
               skipped_from: int | None = None, skipped_call: bool = False) -> Flops:
    """One transformer call: `text` tokens, `noisy` tokens, `source` tokens of which `kept` enter the layers
    from `from_layer` on (None = all); with `active`, only that many noisy tokens are computed (see above).
    A temporal cache: blocks from `skipped_from` on are not run; `skipped_call`: nothing is (zero FLOPs)."""
    if skipped_call:
        return Flops()
    kept = source if kept is None else kept
    d = arch.dim
    if active is None:
        image_in, image_out = noisy + (source if from_layer > 0 else kept), noisy + kept
    else:
        if from_layer:
            raise ValueError("a step cannot both leave noisy tokens without queries and start at a later layer")
        image_in = noisy + source                       # routed at block 0, embedded before that
        image_out = active + (0 if source_cached else kept)
        keys = noisy + kept if keys is None else keys
    total = Flops()
    for layer in range(arch.num_layers if skipped_from is None else min(arch.num_layers, int(skipped_from))):
        if active is None:
            image_keys = image_rows = noisy + (source if layer < from_layer else kept)
        else:
            image_keys, image_rows = keys, image_out
        total = total + layer_flops(arch, layer, text + image_rows, text + image_keys)
    embed = (image_in * arch.in_channels * d + text * arch.text_dim * d
             + (TIMESTEP_CHANNELS * d + d * d) * (2 if arch.guidance else 1)
             + (arch.pooled_dim * d + d * d if arch.pooled_dim else 0))
    head = d * 2 * d + image_out * d * arch.out_channels        # norm_out's AdaLN linear, proj_out (every row)
    shared = (2 * 6 * d + 3 * d) * d if arch.shared_modulation else 0   # FLUX.2: image, text, single stream
    return total + Flops(linear=2.0 * (embed + head + shared))


def step_flops(arch: Arch, step: Any, text_tokens: Iterable[int], source_cached: bool = False) -> Flops:
    """One denoising step of a trace (a `StepTrace` or anything with its fields), one call per text length."""
    noisy = int(getattr(step, "noisy", 0))
    if noisy <= 0:
        raise ValueError("the step has no noisy-token count (StepTrace.noisy): cannot price it")
    keys = getattr(step, "keys", None)
    cached = list(getattr(step, "cache_calls", None) or ())
    out = Flops()
    for i, text in enumerate(text_tokens):
        skipped_from, skipped_call = _skips(cached[i]) if i < len(cached) else (None, False)
        out = out + call_flops(arch, int(text), noisy, int(step.total), int(step.kept),
                               int(getattr(step, "from_layer", 0) or 0), getattr(step, "active", None),
                               None if keys is None else int(keys), source_cached, skipped_from, skipped_call)
    return out


def _skips(call: Any) -> tuple[int | None, bool]:
    """(skipped_from, skipped_call) of a cache call: an `actors.edit_result.CacheCall` or its dict (JSON rows)."""
    get = call.get if isinstance(call, Mapping) else (lambda k, d=None: getattr(call, k, d))
    skipped_from = get("skipped_from", None)
    return (None if skipped_from is None else int(skipped_from)), bool(get("skipped_call", False))


def trace_flops(arch: Arch, trace: Iterable[Any], text_tokens: Iterable[int], source_cached: bool = False) -> Flops:
    text_tokens = tuple(text_tokens)
    out = Flops()
    for step in trace:
        out = out + step_flops(arch, step, text_tokens, source_cached)
    return out


@dataclass(frozen=True)
class PlannedStep:
    """A step as the FLOP model reads a `StepTrace`: noisy tokens, source tokens, kept source tokens."""

    noisy: int
    total: int
    kept: int
    from_layer: int = 0
    active: None = None


def full_trace(trace: Iterable[Any]) -> list[PlannedStep]:
    """The same steps with every token computed: the reference a policy's trace is priced against."""
    return [PlannedStep(noisy=int(s.noisy), total=int(s.total), kept=int(s.total)) for s in trace]


def kept_per_reference(reference_tokens: Sequence[int], keep: float | Sequence[float]) -> list[int]:
    """⌈keep·n⌉ tokens of each reference, a list giving one fraction per reference (the last repeated):
    the fixed budget of the `sparse_context` policy."""
    keeps = list(keep) if isinstance(keep, (list, tuple)) else [keep]
    # the policy takes ⌈fraction·n⌉ in float arithmetic too (policies.sparse_context.top_fraction)
    return [min(n, math.ceil(keeps[min(i, len(keeps) - 1)] * n)) for i, n in enumerate(reference_tokens)]


def reference_trace(noisy: int, reference_tokens: Sequence[int], keep: float | Sequence[float], steps: int,
                    warmup: int) -> list[PlannedStep]:
    """A Sparse Context edit: the sequence is text + `noisy` + Σ reference tokens; `warmup` full steps, then
    the kept tokens of every reference for the other steps."""
    if steps < 1 or not 0 <= warmup <= steps:
        raise ValueError(f"need 0 <= warmup <= steps and steps >= 1, got steps={steps}, warmup={warmup}")
    total = sum(reference_tokens)
    kept = sum(kept_per_reference(reference_tokens, keep))
    return [PlannedStep(noisy, total, total if i < warmup else kept) for i in range(steps)]


def multi_reference_speedup(arch: Arch, text_tokens: Iterable[int], noisy: int, reference_tokens: Sequence[int],
                            keep: float | Sequence[float], steps: int, warmup: int) -> float:
    """FLOP-ideal speedup of a Sparse Context edit with these references over the same edit with none dropped."""
    return predicted_speedup(arch, reference_trace(noisy, reference_tokens, keep, steps, warmup), text_tokens)


def predicted_speedup(arch: Arch, trace: Iterable[Any], text_tokens: Iterable[int],
                      source_cached: bool = False) -> float:
    """FLOP-ideal speedup of a trace over the same steps with nothing dropped."""
    trace, text_tokens = list(trace), tuple(text_tokens)
    full = trace_flops(arch, full_trace(trace), text_tokens).total
    return full / trace_flops(arch, trace, text_tokens, source_cached).total
