"""Growing a trained toy transformer into a deeper one of the same class, function-preservingly: the new dual and
single blocks are appended after the old ones of their kind with their adaLN-Zero gates zeroed, so the grown
model computes exactly the small one's output at the start (each new block adds gate · f(x) = 0 to its residual
streams) and training opens the gates. Optionally the new dual blocks' image attention starts as a "copy head"
(`copy_head_init`): every noisy token attends to the reference token at its own (h, w), so that copying the
source is the easy solution of a local edit. Used by the recipe pilots (`studies.toy.recipe_pilot --grow`) and by
a toy run whose config has a `grow` section (`finetune.toy_init.load_init_pipeline`)."""
from __future__ import annotations

import math

import torch
from diffusers import FluxTransformer2DModel
from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

# copy-head constants, chosen numerically (tests/test_toy_grow.py measures the attention they give): the
# axis-0 pair's phase maximises cos(φ - 1) - cos(φ), the margin of the reference token (axis-0 id 1) over the
# noisy token at the same (h, w) (id 0); the h/w amplitude makes the peak at Δh = Δw = 0 sharp
COPY_PHASE = math.pi / 2 + 0.5
COPY_AXIS0_AMP = 6.0
COPY_HW_AMP = 8.0


def grow_transformer(small: FluxTransformer2DModel, num_layers: int, num_single_layers: int,
                     copy_heads: bool = False, seed: int = 0, open_gate: float = 0.0) -> FluxTransformer2DModel:
    """A `FluxTransformer2DModel` of `small`'s config with `num_layers` dual and `num_single_layers` single
    blocks: every weight `small` has copied, the new blocks random (seeded by `seed`) with zeroed gates, and,
    with `copy_heads`, the new dual blocks' image attention initialised as copy heads; `open_gate` > 0 opens
    them (`open_copy_path`): no longer function-preserving, the grown model starts by copying."""
    have_l, have_s = small.config.num_layers, small.config.num_single_layers
    if num_layers < have_l or num_single_layers < have_s:
        raise ValueError(f"grow: {num_layers} dual + {num_single_layers} single blocks cannot hold the "
                         f"{have_l} + {have_s} of the model it grows")
    config = {k: v for k, v in small.config.items() if not k.startswith("_")}
    config.update(num_layers=num_layers, num_single_layers=num_single_layers)
    with torch.random.fork_rng(devices=[]):   # the new blocks' init, without touching the global generator
        torch.manual_seed(seed)
        big = FluxTransformer2DModel(**config)
    missing, unexpected = big.load_state_dict(small.state_dict(), strict=False)
    new = _new_block_prefixes(have_l, num_layers, have_s, num_single_layers)
    if unexpected or any(not k.startswith(new) for k in missing):
        raise ValueError(f"grow: weights that do not map (unexpected {unexpected[:3]}, missing "
                         f"{[k for k in missing if not k.startswith(new)][:3]})")
    with torch.no_grad():
        for block in big.transformer_blocks[have_l:]:
            zero_gates(block)
            if copy_heads:
                copy_head_init(block, config["axes_dims_rope"])
                if open_gate:
                    open_copy_path(block, open_gate)
        for block in big.single_transformer_blocks[have_s:]:
            zero_gates(block)
    param = next(small.parameters())
    if (param.device, param.dtype) != (next(big.parameters()).device, next(big.parameters()).dtype):
        big = big.to(param.device, param.dtype)
    return big.train(small.training)


def _new_block_prefixes(have_l: int, want_l: int, have_s: int, want_s: int) -> tuple[str, ...]:
    return (tuple(f"transformer_blocks.{i}." for i in range(have_l, want_l))
            + tuple(f"single_transformer_blocks.{i}." for i in range(have_s, want_s)))


def _zero_chunks(linear: torch.nn.Linear, chunks: int, which: tuple[int, ...]) -> None:
    size = linear.out_features // chunks
    for c in which:
        linear.weight[c * size:(c + 1) * size] = 0.0
        if linear.bias is not None:
            linear.bias[c * size:(c + 1) * size] = 0.0


@torch.no_grad()
def open_copy_path(block: FluxTransformerBlock, gate: float) -> None:
    """A copy head whose output reaches the residual from step 0: the image stream's attention shift and scale
    zeroed (v is the plain normalised hidden state), to_v and to_out identities, and the attention gate a
    constant `gate` (its weights stay zero, its bias `gate`). Each noisy token then adds `gate` times the
    normalised features of the reference token at its own position: copying is where training starts."""
    attn, dim = block.attn, block.attn.to_v.in_features
    if attn.to_v.out_features != dim or attn.to_out[0].out_features != dim:
        raise ValueError("an open copy path needs heads x head_dim equal to the model width")
    _zero_chunks(block.norm1.linear, 6, (0, 1))
    size = block.norm1.linear.out_features // 6
    block.norm1.linear.bias[2 * size:3 * size] = gate
    for proj in (attn.to_v, attn.to_out[0]):
        proj.weight.copy_(torch.eye(dim, dtype=proj.weight.dtype))
        proj.bias.zero_()


@torch.no_grad()
def zero_gates(block: FluxTransformerBlock | FluxSingleTransformerBlock) -> None:
    """Zero the adaLN-Zero gates of a block, so that it adds nothing to its residual streams. Dual block:
    norm1 and norm1_context emit (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp): chunks 2
    and 5. Single block: norm emits (shift, scale, gate): chunk 2 (diffusers' AdaLayerNormZero[Single])."""
    if isinstance(block, FluxTransformerBlock):
        _zero_chunks(block.norm1.linear, 6, (2, 5))
        _zero_chunks(block.norm1_context.linear, 6, (2, 5))
    elif isinstance(block, FluxSingleTransformerBlock):
        _zero_chunks(block.norm.linear, 3, (2,))
    else:
        raise TypeError(f"zero_gates: not a Flux block: {type(block).__name__}")


def copy_head_weights(axes_dims_rope: tuple[int, ...] | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(norm_q.weight, norm_k.weight) of a copy head over head_dim = sum(axes_dims_rope). RoPE rotates each
    interleaved pair (2i, 2i + 1) by position · ω_i, so with q, k constant per token the score of a pair is
    |q||k| cos(ω_i (p_q - p_k) + arg q - arg k). The axis-0 pair of highest frequency (ω = 1: dims 0, 1) gets
    a phase so that axis-0 offset -1 (noisy query, reference key) beats offset 0; every h/w pair gets q = k =
    amplitude (peak at Δh = Δw = 0); the lower axis-0 pairs stay zero (they barely vary)."""
    head_dim = int(sum(axes_dims_rope))
    wq, wk = torch.zeros(head_dim), torch.zeros(head_dim)
    wq[0], wq[1] = COPY_AXIS0_AMP * math.cos(COPY_PHASE), COPY_AXIS0_AMP * math.sin(COPY_PHASE)
    wk[0] = COPY_AXIS0_AMP
    hw_start = int(axes_dims_rope[0])
    wq[hw_start::2] = COPY_HW_AMP   # the real part of each h/w pair
    wk[hw_start::2] = COPY_HW_AMP
    return wq, wk


@torch.no_grad()
def copy_head_init(block: FluxTransformerBlock, axes_dims_rope: tuple[int, ...] | list[int]) -> None:
    """Make `block`'s image attention a copy head: to_q / to_k weights 0 and biases 1, so the pre-norm q and k
    are ones in every head and token (RMSNorm leaves them ones), and norm_q / norm_k weights
    `copy_head_weights(axes_dims_rope)` (the model's RoPE split: the blocks do not carry it), so each noisy
    token's score peaks at the reference token of its own (h, w). to_v,
    to_out and the context stream stay as they are (random); the gates are untouched (zero: still exact)."""
    attn = block.attn
    if sum(axes_dims_rope) != attn.head_dim:
        raise ValueError(f"copy heads: RoPE axes {list(axes_dims_rope)} do not sum to head_dim {attn.head_dim}")
    wq, wk = copy_head_weights(axes_dims_rope)
    for proj in (attn.to_q, attn.to_k):
        proj.weight.zero_()
        proj.bias.fill_(1.0)
    attn.norm_q.weight.copy_(wq.to(attn.norm_q.weight))
    attn.norm_k.weight.copy_(wk.to(attn.norm_k.weight))

