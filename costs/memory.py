"""GPU memory of one edit, predicted per model × policy × size: what has to be resident on the editing card.

- transformer weights and the encoders (text encoders + VAE, `Architecture.encoder_params`), bf16, both
  resident for the whole edit; with `text_encoders: offload` (`actors.text_encoders`) the encoders are on the
  card only while the prompt is encoded, before any cache or step activation exists, so the peak is the
  larger of the two phases (the VAE is counted with them: small, and on the card at both ends);
- caches kept across steps, per CFG branch: the K/V cache of SpotEdit, focus and RegionE (post-RoPE keys and
  values of [text, noisy, source] tokens, [tokens, heads, head_dim] each, per layer: `actors.spot_buffers`;
  with SpotFusion also the source keys rotated at the noisy positions on the first RoPE axis' dims), the
  temporal caches' residuals (first-block: head and tail residual, magcache: one, [noisy, dim] bf16) and output
  factors (taylorseer: order + 1 fp32 [noisy, out_channels]; velocity-decay: the last output);
- activations: the peak of one transformer call (the calls of a step run one after the other), estimated from
  the live tensors of the block that holds the most (`block_peak_units`), plus ToPi's statistics temporaries.

Not counted: the CUDA context, cuBLAS workspaces and allocator fragmentation (`RESERVE_GIB` stands for them),
the metric models (CLIP, DINO, LPIPS) that load into the same actor, and the VAE decoder's activations.
Every number is a prediction of this model: nothing here was measured on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

from actors.models import model

from .architectures import for_model
from .flops import Arch, image_tokens
from .kernels import A, F, table_bytes
from .mechanism_kernels import FUSION_SHARE, STATS_CHUNK

GiB = 2 ** 30
RESERVE_GIB = 2.0        # assumption: CUDA context + workspaces + fragmentation kept free on the card
REFERENCE_CAP = 1024     # FLUX.2 [klein] resizes a reference above 1024² px to that area (flux2/references.py)
TAYLOR_FACTORS = 2       # taylorseer's default order 1: two fp32 factors (actors/caches/taylorseer.py)


@dataclass(frozen=True)
class MemoryPolicy:
    """What a policy keeps on the card beyond the model (`needs`: mechanisms its family must support)."""

    name: str
    kv_context: bool = False        # SpotEdit's / the static context's K/V cache, every layer, every branch
    fusion: bool = False            # SpotFusion's rotated source keys beside it (spot_buffers' `target`)
    stats: bool = False             # attention statistics at anchor calls (ToPi)
    residuals: int = 0              # [noisy, dim] bf16 buffers per branch (first-block 2, magcache 1)
    outputs: int = 0                # [noisy, out_channels] buffers per branch (taylorseer, velocity-decay)
    output_bytes: int = A
    needs: tuple[str, ...] = ()
    block_cache: bool = False       # a cache hooked on every block (needs blocks returning text and image apart)


POLICIES: dict[str, MemoryPolicy] = {p.name: p for p in (
    MemoryPolicy("full"),
    MemoryPolicy("spotedit", kv_context=True, fusion=True, needs=("query_skip",)),
    MemoryPolicy("focus", kv_context=True, outputs=TAYLOR_FACTORS, output_bytes=F, needs=("query_skip",)),
    MemoryPolicy("regione", kv_context=True, outputs=1, needs=("query_skip",)),   # + velocity-decay's output
    MemoryPolicy("topi", stats=True, needs=("layer_routing", "attention_stats")),
    MemoryPolicy("first-block", residuals=2, block_cache=True),
    MemoryPolicy("magcache", residuals=1, block_cache=True),
    MemoryPolicy("taylorseer", outputs=TAYLOR_FACTORS, output_bytes=F),
)}


@dataclass(frozen=True)
class Memory:
    """GiB of each part of one edit on the card."""

    weights: float
    encoders: float
    caches: float
    activations: float
    refused: str | None = None      # why the policy cannot run on this model (then the parts are not summed)
    offload: bool = False           # text encoders on the card only while the prompt is encoded

    @property
    def total(self) -> float:
        if self.offload:
            return self.weights + max(self.encoders, self.caches + self.activations)
        return self.weights + self.encoders + self.caches + self.activations


def source_tokens(model_name: str, size: int) -> int:
    """Source tokens of one reference at size² output: Kontext and Qwen encode it at the output size (their
    adapters), FLUX.2 [klein] caps a reference at 1024² px."""
    n = image_tokens(size)
    return min(n, image_tokens(REFERENCE_CAP)) if model(model_name).family.name == "flux2" else n


def block_peak_units(arch: Arch, rows: int, keys: int, spot: bool = False) -> float:
    """Peak live activations inside one block, in [1, dim] bf16 rows: `rows` computed tokens (text included),
    `keys` key tokens. Flux's single-stream block holds its input, the [text, image] concatenation (the
    residual), the modulated norm and the MLP's hidden (ratio·dim) across the attention; then q, and k, v with
    RoPE's temporaries over the keys (the rotated copy, two fp32 products and their fp32 sum: 7 bf16-widths), or
    the [attention, MLP] concatenation with proj_out and the gate. Qwen's dual block keeps its input, normed and
    modulated streams; then the per-stream and joint q, k, v, or the MLP's hidden twice (the linear's output
    and its GELU) next to the second norm. SpotEdit's partial calls add the assembled image K and V."""
    r = arch.mlp_ratio * (2 if arch.gated_mlp else 1)   # FLUX.2's SwiGLU input projection is 2·ratio wide
    extra = 2 * keys if spot else 0
    if arch.family == "flux":
        return max((4 + r) * rows + 9 * keys + extra, (7 + 2 * r) * rows)
    return max(4 * rows + 7 * keys + extra, (6 + 2 * r) * rows)


def activation_bytes(arch: Arch, text: int, image_in: int, rows: int, keys: int, spot: bool = False,
                     stats_noisy: int = 0) -> float:
    """Peak bytes of one call: the inputs (packed latents, text embeddings), the RoPE table, the block peak
    over text + `rows` computed and text + `keys` key tokens, and (ToPi's anchors, `stats_noisy` noisy queries)
    the statistics temporaries (`stats_bytes`: log-sum-exps, one chunk's fp32 products with the source keys)
    next to the block's held tensors."""
    d, n_rows, n_keys = arch.dim, text + rows, text + keys
    inputs = image_in * arch.in_channels * A + text * arch.text_dim * A
    table = (text + image_in) * arch.head_dim * table_bytes(arch)
    peak = block_peak_units(arch, n_rows, n_keys, spot) * d * A
    if stats_noisy:
        held = (3 + arch.mlp_ratio if arch.family == "flux" else 3) * n_rows * d * A
        peak = max(peak, held + stats_bytes(arch, n_rows, stats_noisy, keys - stats_noisy))
    return inputs + table + peak


def stats_bytes(arch: Arch, rows: int, noisy: int, source: int) -> float:
    """Live temporaries of the attention statistics on one recorded layer (actors.attention_stats: the layer's
    own attention call also returns the log-sum-exp, so q, k, v are the block's own): each of the call's `rows`
    queries' fp32 log-sum-exp, the `source` keys and one chunk of (up to 1024) noisy queries laid out per head,
    and the chunk's fp32 products against the source keys [heads, chunk, source] (exp'd in place)."""
    heads, chunk = arch.dim // arch.head_dim, min(STATS_CHUNK, noisy)
    return heads * rows * F + (source + chunk) * arch.dim * A + heads * chunk * source * F


def refusal(model_name: str, policy: MemoryPolicy) -> str | None:
    """Why `policy` cannot run on this model's family (its mechanisms are refused), or None."""
    fam = model(model_name).family
    for need in policy.needs:
        if need in fam.unsupported:
            return f"{fam.name} refuses {need}: {fam.unsupported[need]}"
    if policy.block_cache and fam.name == "flux2":
        # actors.caches.runtime.BlockHook: FLUX.2's single-stream blocks return one sequence
        return "block caches need blocks that return image and text apart; FLUX.2's single-stream blocks do not"
    return None


def kv_bytes(arch: Arch, rows: int, fusion_rows: int, int8: bool) -> float:
    """One CFG branch's K/V buffers over every layer (`rows` per layer, text included) and SpotFusion's target
    (1/8 of `fusion_rows` keys, kept in the compute dtype); int8 (actors.kv_int8): one byte per value plus an
    fp32 scale per row and head, and one layer's compute-dtype scratch for the call that reads it."""
    target = fusion_rows * FUSION_SHARE * arch.dim * A * arch.num_layers
    if not int8:
        return 2 * rows * arch.dim * A * arch.num_layers + target
    heads = arch.dim // arch.head_dim
    return 2 * rows * (arch.dim + heads * F) * arch.num_layers + 2 * rows * arch.dim * A + target


def edit_memory(model_name: str, policy_name: str, size: int, offload: bool = False,
                kv_int8: bool = False) -> Memory:
    """GiB on the card for one edit of `model_name` under `policy_name` at size² pixels (one reference);
    `offload`: text encoders in host memory between prompts; `kv_int8`: the K/V buffers stored in int8."""
    if policy_name not in POLICIES:
        raise ValueError(f"unknown policy {policy_name!r}; priced: {', '.join(POLICIES)}")
    policy, priced = POLICIES[policy_name], for_model(model_name)
    arch, texts = priced.arch, priced.text()
    weights = priced.architecture.params * A / GiB
    encoders = priced.architecture.encoder_params * A / GiB
    reason = refusal(model_name, policy)
    if reason:
        return Memory(weights, encoders, 0.0, 0.0, reason, offload)
    n, s = image_tokens(size), source_tokens(model_name, size)
    branches, text = len(texts), max(texts)
    caches = branches * (policy.residuals * n * arch.dim * A + policy.outputs * n * arch.out_channels * policy.output_bytes)
    if policy.kv_context:   # per branch: K and V of its text, noisy and source rows; SpotFusion's target rows
        caches += sum(kv_bytes(arch, t + n + s, n if policy.fusion else 0, kv_int8) for t in texts)
    prompts = sum(texts) * arch.text_dim * A   # every branch's prompt embeddings, resident all edit
    # a full call holds the most: a partial call's full-size keys (and SpotEdit's assembled K/V) come with
    # fewer computed rows, which `block_peak_units` weighs more (their MLP hidden is ratio·dim wide)
    act = activation_bytes(arch, text, n + s, n + s, n + s, stats_noisy=n if policy.stats else 0)
    return Memory(weights, encoders, caches / GiB, (act + prompts) / GiB, offload=offload)


def config_memory(model_name: str, policy_name: str, cache_name: str | None, size: int,
                  offload: bool = False, kv_int8: bool = False) -> Memory:
    """One edit of a policy composed with a temporal cache: the policy's memory plus the cache's buffers (the
    two hold different things: K/V context or statistics vs per-branch residuals or outputs)."""
    base = edit_memory(model_name, policy_name, size, offload, kv_int8)
    if cache_name is None or cache_name not in POLICIES or base.refused:
        return base
    cache = edit_memory(model_name, cache_name, size, offload)
    if cache.refused:
        return Memory(base.weights, base.encoders, base.caches, base.activations, cache.refused, offload)
    return Memory(base.weights, base.encoders, base.caches + cache.caches, max(base.activations, cache.activations),
                  offload=offload)


def fits(model_name: str, policy_name: str, size: int, card_gb: float,
         offload: bool = False, kv_int8: bool = False) -> tuple[bool, float, str]:
    """(fits, GiB needed, reason): whether one edit fits a card of `card_gb` GiB (80: H100, 141: H200) with
    `RESERVE_GIB` kept free. What a preflight would ask before placing a run on a card type."""
    m = edit_memory(model_name, policy_name, size, offload, kv_int8)
    if m.refused:
        return False, 0.0, f"{model_name} cannot run {policy_name}: {m.refused}"
    usable = card_gb - RESERVE_GIB
    parts = describe(m)
    if m.total <= usable:
        return True, m.total, f"{parts} fits {card_gb:g} GiB ({usable - m.total:.1f} GiB to spare)"
    return False, m.total, f"{parts} exceeds the {usable:.1f} GiB usable of a {card_gb:g} GiB card"


def describe(m: Memory) -> str:
    """The parts and their total, as a sentence: `a + b + c + d` resident, `a + max(b, c + d)` offloaded."""
    rest = f"caches {m.caches:.1f} + activations {m.activations:.1f}"
    if m.offload:
        return f"transformer {m.weights:.1f} + max(encoders {m.encoders:.1f}, {rest}) = {m.total:.1f} GiB"
    return f"transformer {m.weights:.1f} + encoders {m.encoders:.1f} + {rest} = {m.total:.1f} GiB"
