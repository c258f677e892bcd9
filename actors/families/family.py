"""What the engine asks of a model family, instead of switching on its name, and what the cost model prices
a model of it as.

A family's engine parts (adapter, processors, RoPE and VAE helpers) may be given as `core.lazy.Lazy` references:
the record is then data a process can read without torch or diffusers (the driver: names, protocols, refusals),
and each part is imported where it is first called (on the GPU worker)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from core.lazy import resolve

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Architecture:
    """The real transformer a model is priced as (`costs`): the tiny and toy models of a family are costed as
    the checkpoint the papers run, since that is what a run on a GPU will hold."""

    name: str                                        # "FLUX.1-Kontext-dev"
    transformer: Mapping[str, Any]                   # the checkpoint's transformer/config.json
    text_tokens: Callable[[int], tuple[int, ...]]    # references -> text tokens of each call of a step
    params: float                                    # transformer parameters (fine-tuning memory)
    encoder_params: float                            # text encoder + VAE parameters
    # the calls after the first are true CFG's negative prompt: skipped at guidance_scale <= 1
    true_cfg: bool = False


@dataclass(frozen=True)
class Protocol:
    """The papers' sampling protocol of one pipeline: what an edit runs when it gives none (`protocols`)."""

    steps: int
    guidance: float
    resize_filter: str   # PIL filter name of the source resize ("bicubic", "lanczos")


@dataclass(frozen=True)
class Family:
    name: str                  # RunInfo.family
    adapter: Callable[[Any], Any]                              # pipe -> ModelAdapter
    stats_processor: Callable[[Any, int, Any], Any]            # (stock processor, layer, collector) -> processor
    spot_processor: Callable[[Any, int], Any] | None           # (SpotKV, layer) -> processor; None: see unsupported
    key_rotary: Callable[[torch.nn.Module, dict, torch.device], Any]   # RoPE rows of every image token
    gather_rotary: Callable[[Any, torch.Tensor, dict], Any] | None   # a block's RoPE, image rows gathered; None: see unsupported
    unpack: Callable[[Any, torch.Tensor, int, int], torch.Tensor]      # packed tokens -> VAE latents
    decoder_features: Callable[[Any, torch.Tensor], list[torch.Tensor]]  # early VAE-decoder activations
    # policy name -> {parameter: the papers' value for this family} (RunInfo.paper): a policy finds its
    # defaults here and refuses a family without them, never borrowing another family's
    paper: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # engine mechanism (a `policies.Needs` field) -> why this family cannot run it: a policy that needs it is
    # refused before the edit (and in preflight), with the reason
    unsupported: Mapping[str, str] = field(default_factory=dict)
    # pipeline class name -> more of the same, for one pipeline of the family (FLUX.2 [klein] KV's processors)
    pipeline_unsupported: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # pipeline class name -> its adapter, where one pipeline of the family computes differently (klein KV)
    pipeline_adapters: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    # the default adapter's protocol, and the pipelines' whose adapter runs another (as data: no adapter import);
    # None: read off the adapter class (a family record that gives none)
    protocol: Protocol | None = None
    pipeline_protocols: Mapping[str, Protocol] = field(default_factory=dict)

    def adapter_class(self, pipeline: type) -> Callable[[Any], Any]:
        """The adapter (a class: its defaults are class attributes) of this family's `pipeline` class."""
        return resolve(self.pipeline_adapters.get(pipeline.__name__, self.adapter))

    def protocol_for(self, pipeline: str) -> Protocol:
        """The sampling protocol of this family's pipeline class named `pipeline`, without importing its adapter
        when the family gives it as data."""
        given = self.pipeline_protocols.get(pipeline) if pipeline in self.pipeline_adapters else self.protocol
        if given is not None:
            return given
        adapter = resolve(self.pipeline_adapters.get(pipeline, self.adapter))
        return Protocol(adapter.default_steps, adapter.default_guidance, adapter.resize_filter)

    def refusal(self, policy: str, needs: Any, pipeline: str | None = None) -> str | None:
        """Why `policy` (whose plans use `needs`) cannot run on this family (on its `pipeline` class), or None."""
        for mechanism, reason in self.unsupported.items():
            if getattr(needs, mechanism, None):
                return f"policy {policy!r} needs {mechanism}, which model family {self.name!r} does not run: {reason}"
        for mechanism, reason in self.pipeline_unsupported.get(pipeline or "", {}).items():
            if getattr(needs, mechanism, None):
                return f"policy {policy!r} needs {mechanism}, which {pipeline} does not run: {reason}"
        return None
