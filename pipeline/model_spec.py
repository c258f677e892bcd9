"""A run's model entry (`models:` in a run config): which model, where its weights are, what rows call it, and
the options its actors load and edit it with. The option values are checked here, in the driver, without
importing torch; what only the model's own libraries can say (an attention backend's kernels, a bucket size)
is checked where they are imported (the preflight, the actor)."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, field_validator

from pipeline.validation import NonEmptyStr, Section, empty_if_none

# lora: folder (or s3:// prefix) of a LoRA adapter saved by finetune.lora.save_lora; attention_backend: a
# diffusers dispatcher backend (checked where the model loads); text_encoders: resident | offload; kv_store:
# SpotEdit's / focus' / RegionE's K/V buffers in the compute dtype or int8 (actors.kv_int8); bucket: kept and
# active token counts rounded up to multiples of it, tokens or "P%" (actors.shape_buckets; checked at load)
MODEL_OPTIONS = ("lora", "attention_backend", "text_encoders", "kv_store", "bucket")
KV_STORES = ("compute", "int8")   # actors.spot_attention.STORES, without importing torch
TEXT_ENCODER_PLACEMENTS = ("resident", "offload")   # actors.text_encoders.PLACEMENTS, without importing torch

Options = Annotated[dict[str, Any], BeforeValidator(empty_if_none)]


class ModelSpec(Section):
    name: NonEmptyStr
    path: NonEmptyStr | None = None  # local folder or s3:// prefix (synced once per node); None: built-in tiny models
    options: Options = {}  # passed to the model adapter
    label: NonEmptyStr | None = None  # what rows and reports call it; needed when a name appears more than once

    @property
    def key(self) -> str:
        return self.label or self.name

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(MODEL_OPTIONS))
        if unknown:
            raise ValueError(f"unknown keys {unknown}; accepted: {', '.join(MODEL_OPTIONS)}")
        placement = options.get("text_encoders", "resident")
        if placement not in TEXT_ENCODER_PLACEMENTS:
            raise ValueError(f"text_encoders must be one of {', '.join(TEXT_ENCODER_PLACEMENTS)}, got {placement!r}")
        if options.get("kv_store", "compute") not in KV_STORES:
            raise ValueError(f"kv_store must be one of {', '.join(KV_STORES)}, got {options['kv_store']!r}")
        backend = options.get("attention_backend")
        if backend is not None and (not isinstance(backend, str) or not backend):
            raise ValueError(f"attention_backend must be a backend name (diffusers'), got {backend!r}")
        return options
