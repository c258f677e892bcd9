"""SpotEdit's selector on the roofline: what one scored step costs beside the partial transformer step it decides.

`lpips_vae` (actors.spot_selector) runs x̂0 through the first layers of the model's own VAE decoder every scored
step: `conv_in`, the mid block (resnet, one attention over every latent position, resnet) and the first up
block (three resnets and a 2× upsampling convolution). The mid-block attention has ONE head as wide as the
decoder (512 FLUX, 384 Qwen): quadratic in positions (0.55 TFLOP at 1024², 8.8 at 2048² for FLUX) and above
FlashAttention's head-dim limit of 256, so SDPA falls back to the memory-efficient kernel, which the roofline
still prices at the tensor-core peak: these times are lower bounds, the attention's most of all.

Qwen-Image's VAE is causal 3D: a stock 3×3×3 convolution on one frame multiplies two zero frames too (3× the
FLOPs, and a padded copy); `actors.families.qwen_image_edit.single_frame` runs the exact 2D equivalent.

Decoder shapes (diffusers configs of the real checkpoints): FLUX `AutoencoderKL`, block_out_channels
(128, 256, 512, 512), layers_per_block 2 (3 resnets per up block), GroupNorm; Qwen `AutoencoderKLQwenImage`,
base_dim 96, dim_mult (1, 2, 4, 4) (384 at the top), RMS norm, its first up block's upsampling convolution
halving the channels (384 -> 192).
"""
from __future__ import annotations

from dataclasses import dataclass

from .kernels import A, ATTENTION, ELEMENTWISE, LINEAR, Kernel, attention, copy, ew, linear


@dataclass(frozen=True)
class DecoderPrefix:
    """The decoder layers the selector runs."""

    channels: int            # width of conv_in's output, the mid block and the first up block
    up_out: int              # channels after the first up block's upsampling convolution
    latent_channels: int = 16
    up_resnets: int = 3
    taps: int = 1            # temporal taps a convolution multiplies (3: Qwen's causal 3D on one frame)


PREFIXES = {"flux": DecoderPrefix(512, 512), "qwen": DecoderPrefix(384, 192, taps=3)}


def conv(name: str, positions: int, c_in: int, c_out: int, taps: int = 1) -> list[Kernel]:
    """A 3×3 convolution (× `taps` temporal taps) as an implicit GEMM; a 3D one reads its zero-padded copy."""
    k = 9 * taps * c_in
    out = [Kernel(LINEAR, name, 2.0 * positions * k * c_out, (positions * taps * c_in + k * c_out) * A,
                  positions * c_out * A)]
    if taps > 1:   # F.pad writes the input with its zero frames before the convolution reads it
        out.insert(0, ew(f"{name} pad", positions * taps * c_in, A / taps, A))
    return out


def resnet(name: str, positions: int, c: int, taps: int) -> list[Kernel]:
    """norm + SiLU, conv, norm + SiLU, conv, residual add (same width in and out)."""
    out: list[Kernel] = []
    for i in (1, 2):
        out += [ew(f"{name} norm{i}", positions * c, 2 * A, A), ew(f"{name} silu{i}", positions * c, A, A)]
        out += conv(f"{name} conv{i}", positions, c, c, taps)
    return out + [ew(f"{name} residual", positions * c, 2 * A, A)]


def mid_attention(positions: int, c: int) -> list[Kernel]:
    """The mid block's one-head attention over every latent position: norm, q/k/v/out projections, SDPA."""
    return [ew("mid attn norm", positions * c, 2 * A, A), linear("mid attn qkv", positions, c, 3 * c),
            Kernel(ATTENTION, "mid attn sdpa (1 head)", attention("", positions, positions, c).flops,
                   3 * positions * c * A, positions * c * A),
            linear("mid attn out", positions, c, c), ew("mid attn residual", positions * c, 2 * A, A)]


def selector_kernels(family: str, size: int, exact_2d: bool = True) -> list[Kernel]:
    """One scored step: x̂0's decoder features and their distance maps to the (cached) source features.
    `family` "flux" or "qwen"; `exact_2d`: Qwen's convolutions as 2D (False: the stock 3D ones)."""
    p = PREFIXES[family]
    taps = 1 if exact_2d else p.taps
    positions, c = (size // 8) ** 2, p.channels
    out = [*conv("conv_in", positions, p.latent_channels, c, taps), *resnet("mid resnet0", positions, c, taps),
           *mid_attention(positions, c), *resnet("mid resnet1", positions, c, taps)]
    for i in range(p.up_resnets):
        out += resnet(f"up resnet{i}", positions, c, taps)
    out += [copy("upsample 2x", 4 * positions * c), *conv("upsample conv", 4 * positions, c, p.up_out)]
    # the three distance maps (normalise, difference, sum over channels) and their resize to the latent grid
    for name, elements in (("map conv_in", positions * c), ("map mid", positions * c),
                           ("map up", 4 * positions * p.up_out)):
        out.append(ew(name, elements, 2 * A, 0.0, ELEMENTWISE))
    return out
