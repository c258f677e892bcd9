"""What lives inside one GPU actor: model adapters, the sampling loop and the regularized sampler."""
from .adapter import EditInputError
from .editor import Editor, adapter_for
from .loading import default_device, load_pipeline
from .models import MODELS
from actors.edit_result import EditResult, StepTrace

__all__ = ["Editor", "EditResult", "StepTrace", "EditInputError", "load_pipeline", "adapter_for", "MODELS",
           "default_device"]
