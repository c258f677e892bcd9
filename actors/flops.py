"""FLOP model of one transformer call and of a whole edit, from a Flux / Qwen-Image transformer config.

What is counted (1 multiply-add = 2 FLOPs): every `nn.Linear` (projections, MLPs, embedders, the AdaLN
modulation linears on the conditioning vector) and the two attention matmuls, Q·Kᵀ and A·V. What is not:
element-wise work (norms, qk-norm, RoPE, activations, softmax, modulation, residuals, bias adds), which is
O(tokens·dim) against O(tokens·dim²) and O(tokens²·dim) for the rest.

Which tokens a layer sees, per step of a trace (`actors.results.StepTrace`):
- layers before `from_layer` see every source token (ToPi's exempt layers), the others the `kept` ones;
- with `active` set (SpotEdit), only the text, the `active` noisy tokens and, unless the policy caches the
  condition image (`source_cached`), the kept source tokens are computed (projections, queries, MLP, output
  head); every layer attends to text + `keys` image tokens (StepTrace.keys; when absent: every noisy token
  and the kept source tokens, the ones without queries coming from SpotEdit's K/V cache).
The embedders run on every token passed to the transformer: ToPi and SpotEdit select rows inside it
(`actors.routing`, from block `from_layer` or 0), TokenDrop before it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

# FLUX.1-Kontext-dev, transformer/config.json (black-forest-labs/FLUX.1-Kontext-dev on the Hugging Face hub);
# equal to the defaults of diffusers' FluxTransformer2DModel (0.42). Text: T5 padded to max_sequence_length=512,
# which is what FluxKontextPipeline (and actors.flux_kontext) passes. One transformer call per step (guidance
# is distilled into the `guidance` embedding, no CFG).
FLUX_KONTEXT_DEV: dict[str, Any] = {
    "_class_name": "FluxTransformer2DModel", "patch_size": 1, "in_channels": 64, "out_channels": None,
    "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24,
    "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": [16, 56, 56],
}
FLUX_KONTEXT_TEXT_TOKENS = (512,)

# Qwen-Image-Edit, transformer/config.json (Qwen/Qwen-Image-Edit on the hub); equal to the defaults of
# diffusers' QwenImageTransformer2DModel (0.42). Text length depends on the prompt: the Qwen2.5-VL encoder sees
# the source resized to ~1024² area (QwenImageEditPipeline), i.e. 1036² px -> 74² patches of 14 px -> 37² = 1369
# merged vision tokens, plus 2 vision markers, the instruction and 5 template tokens after the 64 dropped ones.
# Typical value used here: 1369 + 2 + 13 (a short instruction) + 5 = 1389 for the prompt, and 1369 + 2 + 1 + 5
# = 1377 for the negative prompt " " of true CFG, which makes two transformer calls per step.
QWEN_IMAGE_EDIT: dict[str, Any] = {
    "_class_name": "QwenImageTransformer2DModel", "patch_size": 2, "in_channels": 64, "out_channels": 16,
    "num_layers": 60, "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 3584,
    "guidance_embeds": False, "axes_dims_rope": [16, 56, 56],
}
QWEN_IMAGE_EDIT_TEXT_TOKENS = (1389, 1377)

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

    @property
    def num_layers(self) -> int:
        return self.dual_layers + self.single_layers


def arch_from_config(config: Mapping[str, Any], name: str = "") -> Arch:
    """An `Arch` from a FluxTransformer2DModel / QwenImageTransformer2DModel config (dict or FrozenDict)."""
    cls = str(config.get("_class_name", ""))
    family = "flux" if "num_single_layers" in config or cls.startswith("Flux") else "qwen"
    patch = int(config.get("patch_size", 1 if family == "flux" else 2))
    in_ch = int(config.get("in_channels", 64))
    out = int(config.get("out_channels") or in_ch)
    return Arch(
        family=family, dim=int(config["num_attention_heads"]) * int(config["attention_head_dim"]),
        dual_layers=int(config["num_layers"]), single_layers=int(config.get("num_single_layers", 0) or 0),
        in_channels=in_ch, out_channels=patch * patch * out, text_dim=int(config["joint_attention_dim"]),
        pooled_dim=int(config.get("pooled_projection_dim", 0) or 0) if family == "flux" else 0,
        guidance=bool(config.get("guidance_embeds", False)), name=name or cls)


def arch_of(transformer: Any) -> Arch:
    """The `Arch` of a loaded diffusers transformer."""
    return arch_from_config({**dict(transformer.config), "_class_name": type(transformer).__name__})


REAL: dict[str, tuple[Arch, tuple[int, ...]]] = {
    # name -> (architecture, text tokens of each transformer call of one step)
    "FLUX.1-Kontext-dev": (arch_from_config(FLUX_KONTEXT_DEV, "FLUX.1-Kontext-dev"), FLUX_KONTEXT_TEXT_TOKENS),
    "Qwen-Image-Edit": (arch_from_config(QWEN_IMAGE_EDIT, "Qwen-Image-Edit"), QWEN_IMAGE_EDIT_TEXT_TOKENS),
}


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
    + proj_out over [attn, mlp] ((1+r)·d²). Both are (4 + 2r)·d² multiply-adds.
    """
    d = arch.dim
    return 2.0 * (4 + 2 * arch.mlp_ratio) * d * d


def layer_flops(arch: Arch, layer: int, computed: int, keys: int) -> Flops:
    """One layer: `computed` tokens get projections, queries and MLP; they attend to `keys` tokens."""
    d = arch.dim
    dual = layer < arch.dual_layers
    modulation = 2.0 * (2 * d * 6 * d if dual else d * 3 * d)   # AdaLN linears on the conditioning vector
    attention = 2.0 * 2 * computed * keys * d                    # Q·Kᵀ and A·V over all heads
    return Flops(linear=computed * linear_per_token(arch) + modulation, attention=attention)


def call_flops(arch: Arch, text: int, noisy: int, source: int, kept: int | None = None, from_layer: int = 0,
               active: int | None = None, keys: int | None = None, source_cached: bool = False) -> Flops:
    """One transformer call: `text` tokens, `noisy` tokens, `source` tokens of which `kept` enter the layers
    from `from_layer` on (None = all); with `active`, only that many noisy tokens are computed (see above)."""
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
    for layer in range(arch.num_layers):
        if active is None:
            image_keys = image_rows = noisy + (source if layer < from_layer else kept)
        else:
            image_keys, image_rows = keys, image_out
        total = total + layer_flops(arch, layer, text + image_rows, text + image_keys)
    embed = (image_in * arch.in_channels * d + text * arch.text_dim * d
             + (TIMESTEP_CHANNELS * d + d * d) * (2 if arch.guidance else 1)
             + (arch.pooled_dim * d + d * d if arch.pooled_dim else 0))
    head = d * 2 * d + image_out * d * arch.out_channels        # norm_out's AdaLN linear, proj_out (every row)
    return total + Flops(linear=2.0 * (embed + head))


def step_flops(arch: Arch, step: Any, text_tokens: Iterable[int], source_cached: bool = False) -> Flops:
    """One denoising step of a trace (a `StepTrace` or anything with its fields), one call per text length."""
    noisy = int(getattr(step, "noisy", 0))
    if noisy <= 0:
        raise ValueError("the step has no noisy-token count (StepTrace.noisy): cannot price it")
    keys = getattr(step, "keys", None)
    out = Flops()
    for text in text_tokens:
        out = out + call_flops(arch, int(text), noisy, int(step.total), int(step.kept),
                               int(getattr(step, "from_layer", 0) or 0), getattr(step, "active", None),
                               None if keys is None else int(keys), source_cached)
    return out


def trace_flops(arch: Arch, trace: Iterable[Any], text_tokens: Iterable[int], source_cached: bool = False) -> Flops:
    text_tokens = tuple(text_tokens)
    out = Flops()
    for step in trace:
        out = out + step_flops(arch, step, text_tokens, source_cached)
    return out


@dataclass(frozen=True)
class _FullStep:
    noisy: int
    total: int
    from_layer: int = 0
    active: None = None

    @property
    def kept(self) -> int:
        return self.total


def full_trace(trace: Iterable[Any]) -> list[_FullStep]:
    """The same steps with every token computed: the reference a policy's trace is priced against."""
    return [_FullStep(noisy=int(s.noisy), total=int(s.total)) for s in trace]


def predicted_speedup(arch: Arch, trace: Iterable[Any], text_tokens: Iterable[int],
                      source_cached: bool = False) -> float:
    """FLOP-ideal speedup of a trace over the same steps with nothing dropped."""
    trace, text_tokens = list(trace), tuple(text_tokens)
    full = trace_flops(arch, full_trace(trace), text_tokens).total
    return full / trace_flops(arch, trace, text_tokens, source_cached).total
