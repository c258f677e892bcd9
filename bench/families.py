"""The benchmark's model families (`dropedit bench --model`) and the real architectures each one's traces are
priced on. No heavy imports: the command line reads it to check its arguments."""
from __future__ import annotations

# flux: FluxKontextPipeline; qwen: QwenImageEditPipeline; qwen-plus: QwenImageEditPlusPipeline; flux2:
# Flux2KleinPipeline; flux2-kv: Flux2KleinKVPipeline (klein's transformer class, the reference K/V reused
# after the first call). All of them tiny text encoders and VAE, a transformer of the benchmark's size.
FAMILIES = ("flux", "qwen", "qwen-plus", "flux2", "flux2-kv")
# the families that take several reference images (the others take one in this engine)
MULTI_REFERENCE = ("qwen-plus", "flux2", "flux2-kv")
# FLUX.2's pipeline refuses reference images under 64 px a side (Flux2ImageProcessor.check_image_input)
MIN_SIZE = {"flux2": 64, "flux2-kv": 64}
# names of `costs.architectures.real`: the Kontext and Qwen traces are priced on both one-reference models;
# klein KV on the 9B, the size Black Forest Labs released the KV checkpoint at (FLUX.2-klein-9b-kv)
REAL_ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "flux": ("FLUX.1-Kontext-dev", "Qwen-Image-Edit"), "qwen": ("FLUX.1-Kontext-dev", "Qwen-Image-Edit"),
    "qwen-plus": ("Qwen-Image-Edit-Plus",), "flux2": ("FLUX.2-klein-4B",), "flux2-kv": ("FLUX.2-klein-9B",),
}


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"--model must be one of {', '.join(FAMILIES)}, got {family!r}")
    return family
