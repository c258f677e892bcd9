"""What one transformer layer moves and computes, kernel by kernel, as diffusers 0.42.1 runs it in eager mode on
torch 2.14 (bf16 weights and activations): the roofline's bill of materials (`costs.roofline` prices it).

Kernel classes and what each is charged:
- linear (every `nn.Linear`, bias fused into the GEMM): 2·m·k·n FLOPs; reads m·k activations and k·n weights,
  writes m·n, in bf16. A one-row linear (AdaLN modulation on the conditioning vector) is a weight read.
- attention (FlashAttention: no mask reaches SDPA in the edit path): 4·q·kv·d FLOPs (Q·Kᵀ and A·V over every
  head); reads q, k, v and writes the output once (the score matrix never leaves the chip).
- element-wise (norms, qk-norm, RoPE, modulation, residuals, activations, concatenations, copies): no FLOPs,
  only bytes, one entry per eager kernel (a read and a write of its operands; a broadcast operand of one row
  is not counted).
- mechanism: what our mechanisms add (`costs.mechanism_kernels`).

Sizes are in elements of [rows, dim] tensors; `A` bytes for a bf16 value, `F` for an fp32 one.
"""
from __future__ import annotations

from dataclasses import dataclass

from .flops import Arch

A = 2   # bytes of a bf16 value: weights and activations (the edit runs in bf16)
F = 4   # bytes of an fp32 value: where diffusers upcasts (RoPE, Qwen's qk RMSNorm, the RoPE tables)

LINEAR, ATTENTION, ELEMENTWISE, MECHANISM = "linear", "attention", "elementwise", "mechanism"


@dataclass(frozen=True)
class Kernel:
    """One kernel launch as the roofline prices it."""

    kind: str             # LINEAR | ATTENTION | ELEMENTWISE | MECHANISM
    name: str
    flops: float          # 1 multiply-add = 2 FLOPs
    read: float           # bytes read from device memory
    written: float        # bytes written (what the allocator hands out, unless written in place)
    fp32: bool = False    # runs on the CUDA cores in fp32 (no tensor cores): priced at the fp32 peak
    inplace: bool = False  # writes into an existing tensor (nothing allocated)

    @property
    def bytes(self) -> float:
        return self.read + self.written

    @property
    def allocated(self) -> float:
        """Bytes the allocator hands out for the output (what torch's profiler reports)."""
        return 0.0 if self.inplace else self.written


def linear(name: str, m: int, k: int, n: int) -> Kernel:
    """y[m, n] = x[m, k]·W[k, n] (+ bias, fused): the brief's (m·k + k·n + m·n)·2 bytes."""
    return Kernel(LINEAR, name, 2.0 * m * k * n, (m * k + k * n) * A, m * n * A)


def attention(name: str, queries: int, keys: int, dim: int) -> Kernel:
    """FlashAttention over every head (heads·head_dim = dim): q and out [queries, dim], k and v [keys, dim]."""
    return Kernel(ATTENTION, name, 4.0 * queries * keys * dim, (queries + 2 * keys) * dim * A, queries * dim * A)


def ew(name: str, elements: float, read: float, written: float, kind: str = ELEMENTWISE) -> Kernel:
    """An element-wise kernel: `read` and `written` bytes per element of its output."""
    return Kernel(kind, name, 0.0, elements * read, elements * written)


def copy(name: str, elements: float, kind: str = ELEMENTWISE) -> Kernel:
    """A bf16 copy (torch.cat, .contiguous(), .clone(), index_select): one read, one write per element."""
    return ew(name, elements, A, A, kind)


def layer_norm(name: str, elements: float) -> list[Kernel]:
    """nn.LayerNorm without affine: one fused kernel (its per-row mean/rstd are 1/dim of it: not counted)."""
    return [ew(name, elements, A, A)]


def modulate(name: str, elements: float) -> list[Kernel]:
    """AdaLN's x·(1 + scale) + shift: two eager kernels (a mul, then an add), the one-row operands broadcast."""
    return [ew(f"{name} scale", elements, A, A), ew(f"{name} shift", elements, A, A)]


def gate_residual(name: str, elements: float) -> list[Kernel]:
    """x + gate·y: the gate multiply (reads y, writes), then the residual add (reads x and gate·y, writes)."""
    return [ew(f"{name} gate", elements, A, A), ew(f"{name} residual", elements, 2 * A, A)]


def gelu(name: str, elements: float) -> list[Kernel]:
    """The MLP's GELU (tanh approximation) over its hidden width: one kernel."""
    return [ew(name, elements, A, A)]


def qk_norm(arch: Arch, name: str, elements: float) -> list[Kernel]:
    """RMSNorm over q or k. Flux uses torch.nn.RMSNorm: one fused kernel on CUDA (aten::_fused_rms_norm,
    torch >= 2.8 — an assumption of this model: on the CPU it decomposes). Qwen uses diffusers' RMSNorm, five
    eager kernels with an fp32 upcast: .to(fp32), pow(2), mean (writes one value per head row: not counted),
    x·rsqrt(var) (bf16·fp32 promotes to fp32), .to(bf16), ·weight."""
    if arch.family == "flux":
        return [ew(name, elements, A, A)]
    return [ew(f"{name} upcast", elements, A, F), ew(f"{name} pow", elements, F, F),
            ew(f"{name} mean", elements, F, 0), ew(f"{name} rsqrt mul", elements, A, F),
            ew(f"{name} downcast", elements, F, A), ew(f"{name} weight", elements, A, A)]


def rope(arch: Arch, name: str, rows: int, kind: str = ELEMENTWISE) -> list[Kernel]:
    """RoPE of q or k [rows, dim], in fp32 as diffusers 0.42 computes it.

    Flux (`apply_rotary_emb`, use_real): -x_imag (half the tensor), stack (the rotated copy), x.float(),
    x_rot.float(), x·cos, x_rot·sin, the sum, .to(bf16): 25 B written and 27 B read per element, plus the
    [rows, head_dim] fp32 cos and sin tables read once per product. Qwen (`apply_rotary_emb_qwen`, complex):
    x.float(), the complex product with the [rows, head_dim/2] complex64 table, .type_as(x): 10 B written and
    10 B read per element."""
    e, table = rows * arch.dim, rows * arch.head_dim * F   # a complex64 [rows, D/2] table is rows·D·4 bytes too
    if arch.family == "flux":
        return [ew(f"{name} neg", e / 2, A, A, kind), ew(f"{name} stack", e, A, A, kind),
                ew(f"{name} upcast", e, A, F, kind), ew(f"{name} upcast rotated", e, A, F, kind),
                Kernel(kind, f"{name} cos", 0.0, e * F + table, e * F),
                Kernel(kind, f"{name} sin", 0.0, e * F + table, e * F),
                ew(f"{name} add", e, 2 * F, F, kind), ew(f"{name} downcast", e, F, A, kind)]
    return [ew(f"{name} upcast", e, A, F, kind), Kernel(kind, f"{name} complex mul", 0.0, e * F + table, e * F),
            ew(f"{name} downcast", e, F, A, kind)]


def table_bytes(arch: Arch) -> int:
    """Bytes per row and head_dim of a RoPE table: Flux keeps cos and sin [rows, D] in fp32, Qwen one complex64
    [rows, D/2] table."""
    return 2 * F if arch.family == "flux" else F


def mlp(name: str, rows: int, d: int, ratio: float) -> list[Kernel]:
    """FeedForward (gelu-approximate): d -> ratio·d, GELU, ratio·d -> d."""
    hidden = int(ratio * d)
    return [linear(f"{name} in", rows, d, hidden), *gelu(f"{name} gelu", rows * hidden),
            linear(f"{name} out", rows, hidden, d)]


def dual_block(arch: Arch, text: int, rows: int, keys: int) -> list[Kernel]:
    """One dual-stream block (FluxTransformerBlock, QwenImageTransformerBlock): `text` and `rows` image tokens
    computed, attending to text + `keys` image tokens (keys = rows in a stock call)."""
    d, out = arch.dim, []
    for stream, m in (("image", rows), ("text", text)):
        out += [linear(f"{stream} modulation", 1, d, 6 * d), *layer_norm(f"{stream} norm1", m * d),
                *modulate(f"{stream} norm1", m * d), *(linear(f"{stream} to_{p}", m, d, d) for p in "qkv"),
                *qk_norm(arch, f"{stream} q norm", m * d), *qk_norm(arch, f"{stream} k norm", m * d)]
    if arch.family == "flux":   # joint_qkv: [text, image] concatenated before RoPE, over the computed rows
        out += [copy(f"cat {p}", (text + rows) * d) for p in "qkv"]
        out += [*rope(arch, "rope q", text + rows), *rope(arch, "rope k", text + keys)]
    else:   # Qwen rotates each stream, then concatenates q, k and v
        out += [*rope(arch, "rope q", text + rows), *rope(arch, "rope k", text + keys),
                copy("cat q", (text + rows) * d), copy("cat k", (text + keys) * d), copy("cat v", (text + keys) * d)]
    out += [attention("attention", text + rows, text + keys, d), copy("out contiguous", (text + rows) * d)]
    for stream, m in (("image", rows), ("text", text)):
        out += [linear(f"{stream} to_out", m, d, d), *gate_residual(f"{stream} attention", m * d),
                *layer_norm(f"{stream} norm2", m * d), *modulate(f"{stream} norm2", m * d),
                *mlp(f"{stream} mlp", m, d, arch.mlp_ratio), *gate_residual(f"{stream} mlp", m * d)]
    return out


def single_block(arch: Arch, text: int, rows: int, keys: int) -> list[Kernel]:
    """One Flux single-stream block over [text, image]: cat, AdaLN-single, MLP-in and q, k, v, attention,
    cat [attention, MLP], proj_out, gate and residual."""
    d, n = arch.dim, text + rows
    hidden = int(arch.mlp_ratio * d)
    return [copy("cat text, image", n * d), linear("modulation", 1, d, 3 * d), *layer_norm("norm", n * d),
            *modulate("norm", n * d), linear("proj_mlp", n, d, hidden), *gelu("gelu", n * hidden),
            *(linear(f"to_{p}", n, d, d) for p in "qkv"), *qk_norm(arch, "q norm", n * d),
            *qk_norm(arch, "k norm", n * d), *rope(arch, "rope q", n), *rope(arch, "rope k", text + keys),
            attention("attention", n, text + keys, d), copy("cat attention, mlp", n * (d + hidden)),
            linear("proj_out", n, d + hidden, d), *gate_residual("block", n * d)]


def modelled(arch: Arch) -> bool:
    """The roofline models FLUX.1's and Qwen-Image's blocks; FLUX.2's (fused projections, SwiGLU, shared
    modulation) were not read for it."""
    return not (arch.gated_mlp or arch.shared_modulation)


def block(arch: Arch, layer: int, text: int, rows: int, keys: int) -> list[Kernel]:
    """The kernels of transformer layer `layer` (Flux: dual then single blocks)."""
    if not modelled(arch):
        raise ValueError(f"{arch.name or 'this architecture'}: FLUX.2's blocks (fused projections, SwiGLU, shared "
                         "modulation) are not modelled by the roofline; only FLUX.1 and Qwen-Image are")
    if layer < arch.dual_layers:
        return dual_block(arch, text, rows, keys)
    return single_block(arch, text, rows, keys)


def embed_and_head(arch: Arch, text: int, image_in: int, image_out: int) -> list[Kernel]:
    """Outside the blocks: the embedders on every token passed in, the RoPE table, AdaLN-continuous and
    proj_out on every image row that leaves (as `costs.flops.call_flops` counts them)."""
    d = arch.dim
    out = [linear("x_embedder", image_in, arch.in_channels, d), linear("timestep 1", 1, 256, d),
           linear("timestep 2", 1, d, d)]
    if arch.family == "flux":
        out += [linear("context_embedder", text, arch.text_dim, d)]
        out += [linear("guidance 1", 1, 256, d), linear("guidance 2", 1, d, d)] if arch.guidance else []
        out += [linear("pooled 1", 1, arch.pooled_dim, d), linear("pooled 2", 1, d, d)] if arch.pooled_dim else []
    else:   # Qwen: txt_norm (diffusers' RMSNorm over the encoder's width) before txt_in
        out += [*qk_norm(arch, "txt_norm", text * arch.text_dim), linear("txt_in", text, arch.text_dim, d)]
    # the per-call RoPE table [text + image, head_dim], written once: its fp64 intermediates are left out (a
    # few tables' worth, against a layer's tens of activations)
    out += [ew("rope table", (text + image_in) * arch.head_dim, 0, table_bytes(arch))]
    out += [linear("norm_out modulation", 1, d, 2 * d), *layer_norm("norm_out", image_out * d),
            *modulate("norm_out", image_out * d), linear("proj_out", image_out, d, arch.out_channels)]
    return out
