"""Start a trained toy transformer on the reference-residual parameterisation (`actors.reference_residual`).

Its output layer is zeroed, so at step 0 the model copies the reference exactly (r = 0) while every hidden
feature it learned is kept: training then only has to learn where and how the target differs from the source.
"""
from __future__ import annotations

import torch

from actors.reference_residual import apply_reference_residual


def start_reference_residual(transformer: torch.nn.Module, residual_input: bool = False) -> None:
    """Install the prior on `transformer` (with `residual_input`, the residual flow: it also reads the noisy
    residual) and zero its output projection (FluxTransformer2DModel.proj_out)."""
    with torch.no_grad():
        transformer.proj_out.weight.zero_()
        if transformer.proj_out.bias is not None:
            transformer.proj_out.bias.zero_()
    apply_reference_residual(transformer, residual_input)
