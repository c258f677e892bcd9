"""The reference-residual parameterisation (toy v3's copy prior): the transformer predicts how the clean latent
differs from the reference at the same position, and the velocity the sampler sees is derived from it.

Rectified flow: z_t = (1 − σ)·x0 + σ·ε, v = ε − x0 = (z_t − x0) / σ. With x̂0 = x_ref + r (r the transformer's
raw output), v = (z_t − x_ref − r) / σ. r = 0 is an exact copy of the reference, so "keep what the instruction
does not touch" is the model's zero, and its capacity goes to the edit. The loss is unchanged (MSE on v).

Installed on the transformer as a diffusers `ModelHook`, once at load time when the model's `dropedit.json` says
`"prediction": "reference_residual"` (`actors.model_defaults`): every caller — our loop, diffusers'
`FluxKontextPipeline.__call__`, the peers, training — sees velocities, so `full` still equals diffusers' pipeline
given the same call. FLUX.1-Kontext layout: noisy tokens first (img_ids frame 0), reference tokens after (frame
1); a noisy token's reference is the reference token with the same (row, column). A call that carries only some
reference tokens (a policy dropped the others at the input) must give the full reference for that call with
`full_reference(...)`: the prior needs every position, and the hook refuses a call without it.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from diffusers.hooks import HookRegistry, ModelHook

HOOK = "dropedit_reference_residual"
PREDICTION = "reference_residual"


class ReferenceResidual(ModelHook):
    """v = (z_t − x_ref − r) / σ on the noisy rows of the transformer's output."""

    def __init__(self) -> None:
        super().__init__()
        self.full: tuple[torch.Tensor, torch.Tensor] | None = None   # set for one call by full_reference

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise TypeError("the reference-residual transformer is called with keyword arguments only")
        out = self.fn_ref.original_forward(**kwargs)
        sample = out[0] if isinstance(out, tuple) else out.sample
        velocity = residual_velocity(sample, kwargs["hidden_states"], kwargs["img_ids"], kwargs["timestep"], self.full)
        if isinstance(out, tuple):
            return (velocity, *out[1:])
        out.sample = velocity
        return out


def residual_velocity(raw: torch.Tensor, hidden: torch.Tensor, img_ids: torch.Tensor, sigma: torch.Tensor,
                      full: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The velocity of every noisy row; reference rows of `raw` pass through (callers slice them off)."""
    frames = img_ids[:, 0]
    noisy = int((frames == 0).sum())
    z = hidden[:, :noisy]
    ref_tokens, ref_ids = (hidden[:, noisy:], img_ids[noisy:]) if full is None else full
    ref = aligned_reference(img_ids[:noisy], ref_ids, ref_tokens)
    s = sigma.to(raw.dtype).reshape(-1, 1, 1)
    velocity = (z - ref - raw[:, :noisy]) / s
    return torch.cat([velocity, raw[:, noisy:]], dim=1)


def aligned_reference(noisy_ids: torch.Tensor, ref_ids: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The reference token at each noisy token's (row, column); refuses if any position has none."""
    width = int(max(noisy_ids[:, 2].max(), ref_ids[:, 2].max())) + 1
    key = lambda ids: (ids[:, 1].long() * width + ids[:, 2].long())   # noqa: E731
    noisy_key, ref_key = key(noisy_ids), key(ref_ids)
    order = torch.argsort(ref_key)
    found = torch.searchsorted(ref_key[order], noisy_key).clamp(max=len(order) - 1)
    rows = order[found]
    if not bool((ref_key[rows] == noisy_key).all()):
        raise ValueError("the reference-residual model needs a reference token at every output position: give the "
                         "whole reference for a call that drops some (actors.reference_residual.full_reference), "
                         "and the reference at the output's size")
    return ref[:, rows.to(ref.device)]


def apply_reference_residual(transformer: torch.nn.Module) -> ReferenceResidual:
    """Install the parameterisation on `transformer` (idempotent)."""
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    hook = registry.get_hook(HOOK)
    if hook is None:
        hook = ReferenceResidual()
        registry.register_hook(hook, HOOK)
    return hook


def is_reference_residual(transformer: torch.nn.Module) -> bool:
    registry = getattr(transformer, "_diffusers_hook", None)
    return registry is not None and registry.get_hook(HOOK) is not None


@contextlib.contextmanager
def full_reference(transformer: torch.nn.Module, tokens: torch.Tensor, ids: torch.Tensor) -> Iterator[None]:
    """For the calls inside: the whole reference (tokens [B, M, C], ids [M, 3]) for a model with the prior; a
    no-op for any other model."""
    if not is_reference_residual(transformer):
        yield
        return
    hook = transformer._diffusers_hook.get_hook(HOOK)
    hook.full = (tokens, ids)
    try:
        yield
    finally:
        hook.full = None
