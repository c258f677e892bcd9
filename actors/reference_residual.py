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
PREDICTION = "reference_residual"   # the output only
RESIDUAL_FLOW = "residual_flow"     # the output, and the noisy rows read as z − (1 − σ)·x_ref


class ReferenceResidual(ModelHook):
    """v = (z_t − x_ref − r) / σ on the noisy rows of the transformer's output; with `residual_input`, the
    noisy rows it reads are z_t − (1 − σ)·x_ref (the noisy residual), not z_t."""

    def __init__(self, residual_input: bool = False) -> None:
        super().__init__()
        self.residual_input = residual_input
        self.full: tuple[torch.Tensor, torch.Tensor] | None = None   # set for one call by full_reference

    @property
    def prediction(self) -> str:
        return RESIDUAL_FLOW if self.residual_input else PREDICTION

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise TypeError("the reference-residual transformer is called with keyword arguments only")
        hidden, ids = kwargs["hidden_states"], kwargs["img_ids"]
        noisy, ref = noisy_reference(hidden, ids, self.full)
        s = kwargs["timestep"].to(hidden.dtype).reshape(-1, 1, 1)
        z = hidden[:, :noisy]
        if self.residual_input:
            kwargs = {**kwargs, "hidden_states": torch.cat([z - (1 - s) * ref, hidden[:, noisy:]], dim=1)}
        out = self.fn_ref.original_forward(**kwargs)
        raw = out[0] if isinstance(out, tuple) else out.sample
        velocity = velocity_rows(raw, z, ref, s)
        if isinstance(out, tuple):
            return (velocity, *out[1:])
        out.sample = velocity
        return out


def noisy_reference(hidden: torch.Tensor, img_ids: torch.Tensor,
                    full: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[int, torch.Tensor]:
    """(the number of noisy rows, the reference token at each noisy row's position)."""
    noisy = int((img_ids[:, 0] == 0).sum())
    ref_tokens, ref_ids = (hidden[:, noisy:], img_ids[noisy:]) if full is None else full
    return noisy, aligned_reference(img_ids[:noisy], ref_ids, ref_tokens)


def residual_velocity(raw: torch.Tensor, hidden: torch.Tensor, img_ids: torch.Tensor, sigma: torch.Tensor,
                      full: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The velocity of every noisy row; reference rows of `raw` pass through (callers slice them off)."""
    noisy, ref = noisy_reference(hidden, img_ids, full)
    return velocity_rows(raw, hidden[:, :noisy], ref, sigma.reshape(-1, 1, 1))


def velocity_rows(raw: torch.Tensor, z: torch.Tensor, ref: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """v = (z − x_ref − r) / σ on the first z.shape[1] rows of `raw`; the rows after them pass through."""
    noisy = z.shape[1]
    return torch.cat([(z - ref - raw[:, :noisy]) / sigma.to(raw.dtype), raw[:, noisy:]], dim=1)


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


def apply_reference_residual(transformer: torch.nn.Module, residual_input: bool = False) -> ReferenceResidual:
    """Install the parameterisation on `transformer` (idempotent; refuses to change it)."""
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    hook = registry.get_hook(HOOK)
    if hook is None:
        hook = ReferenceResidual(residual_input)
        registry.register_hook(hook, HOOK)
    elif hook.residual_input != residual_input:
        raise ValueError(f"the transformer already predicts {hook.prediction}")
    return hook


def apply_prediction(transformer: torch.nn.Module, prediction: str) -> None:
    """Put `transformer` on a model folder's `prediction` (`actors.model_defaults`); "velocity" changes nothing."""
    if prediction in (PREDICTION, RESIDUAL_FLOW):
        apply_reference_residual(transformer, residual_input=prediction == RESIDUAL_FLOW)


def prediction_of(transformer: torch.nn.Module) -> str:
    registry = getattr(transformer, "_diffusers_hook", None)
    hook = None if registry is None else registry.get_hook(HOOK)
    return "velocity" if hook is None else hook.prediction


def is_reference_residual(transformer: torch.nn.Module) -> bool:
    return prediction_of(transformer) != "velocity"


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
