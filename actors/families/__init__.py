"""Model families: one package each (adapter, attention processors, positions, VAE access, the papers'
defaults, the architecture the cost model prices). `actors.models` maps model names to them; the engine
looks a family up there by pipeline or by name and never switches on the name itself."""
from __future__ import annotations

from .family import Architecture, Family
from .flux2 import FLUX2
from .flux_kontext import FLUX_KONTEXT
from .qwen_image_edit import QWEN_IMAGE_EDIT

__all__ = ["Architecture", "Family", "FLUX2", "FLUX_KONTEXT", "QWEN_IMAGE_EDIT"]
