"""The SYNTHETIC model's service times, on the driver: each configuration's edit time from the cost model
(`costs`: FLOPs of the real architecture at an assumed TFLOP/s), and the actor factory that hands them to the
light actor (`simulation.synthetic_model`), so the actor processes never import the cost model (which reaches
the model registry, diffusers and torch)."""
from __future__ import annotations

from typing import Any, Sequence

from costs import edit_cost, gpu_seconds
from costs.flops import image_tokens
from pipeline.configuration import Configuration
from simulation.synthetic_model import SimulatedEditActor

NOMINAL_KEEP = 0.5   # assumption for policies whose keep ratio is adaptive (TokenDrop, ToPi mass, SpotEdit)
KEEP_PARAMS = ("ratio", "keep")   # parameters that fix a configuration's keep ratio


def nominal_keep(config: Configuration) -> float:
    if config.policy == "full":
        return 1.0
    params = config.policy_params
    return next((float(params[k]) for k in KEEP_PARAMS if isinstance(params.get(k), (int, float))), NOMINAL_KEEP)


def edit_seconds(config: Configuration, tflops: float) -> float:
    """Cost-model time of one edit on the real architecture of the config's model, at `tflops` TFLOP/s."""
    cost = edit_cost(config.model_name, config.height, config.width, config.steps, config.guidance_scale,
                     keep=nominal_keep(config))
    return gpu_seconds(cost.flops, tflops)


def service_table(configs: Sequence[Configuration], tflops: float) -> dict[str, list]:
    """config id -> [noiseless edit seconds, image tokens, nominal keep]: what the synthetic actor needs."""
    return {c.config_id: [edit_seconds(c, tflops), image_tokens(c.height, c.width), nominal_keep(c)]
            for c in configs}


def simulated_factory(ledger: str, tflops: float, load_s: float, scale: float, noise: float, slots: int = 1):
    """A `pipeline.graph.ActorFactory` that gives every model entry the synthetic model (`slots` logical GPUs
    per actor process)."""
    def factory(configs: Sequence[Configuration], cfg: Any, run_id: str) -> tuple[type, dict[str, Any]]:
        rows = {c.config_id: c.to_row() for c in configs}   # what crosses Ray: plain rows
        return SimulatedEditActor, dict(configs=rows, run_id=run_id, ledger=ledger,
                                        service=service_table(configs, tflops),
                                        device=f"synthetic GPU ({tflops:g} TFLOP/s)",
                                        load_s=load_s, scale=scale, noise=noise, slots=slots,
                                        output=cfg.output, storage=cfg.storage.model_dump(),
                                        pairing=cfg.units.pairing)
    return factory
