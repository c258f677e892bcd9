"""The cost model: what an edit, a step or a training step costs (FLOPs today), from the architecture the
model registry (`actors.models`) prices each model as. Below everything that plans or reports a cost (the dry
run, the cluster simulation, the fine-tune plan, the benchmarks); imports `actors` and nothing above it."""
from .architectures import Priced, architectures, for_model, real
from .edit_cost import DEFAULT_GPU_TFLOPS, EditCost, edit_cost, gpu_seconds

__all__ = ["DEFAULT_GPU_TFLOPS", "EditCost", "Priced", "architectures", "edit_cost", "for_model", "gpu_seconds",
           "real"]
