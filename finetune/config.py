"""The training config, the one loader of `python -m jobs.train`: pydantic models with readable errors, loaded
from YAML plus `--set key=value`. A config whose `data` names a manifest (`data.uri`) is a `FinetuneConfig`
(configs/finetune/*.yaml); any other is the toy's `ToyTrainConfig` (`finetune.toy_config`: configs/train_toy*.yaml,
configs/finetune_toy_*.yaml), trained on the procedural toy data by the same driver."""
from __future__ import annotations

from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.assignments import apply_assignments
from .toy_config import ToyTrainConfig

DEFAULT_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]


def trainable_models() -> tuple[str, ...]:
    """The registered models whose family has a fine-tuning objective (`finetune.objectives.OBJECTIVES`)."""
    from actors.models import MODELS

    from .objectives import OBJECTIVES

    return tuple(name for name, spec in MODELS.items() if spec.family.name in OBJECTIVES)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    name: str                                   # a name of the model registry (actors.models)
    path: Optional[str] = None                  # local folder or s3:// prefix (synced to cache_dir)
    cache_dir: str = "~/.cache/dropedit/models"
    max_sequence_length: Optional[int] = None   # text length; None: the adapter's default (512)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        names = trainable_models()
        if v not in names:
            raise ValueError(f"unknown model {v!r}; accepted: {', '.join(names)}")
        return v


class DataSection(_Section):
    uri: str                                    # manifest (JSONL / JSON / Parquet), local or s3://
    val_uri: Optional[str] = None               # held-out manifest; None: the first val_n training records
    val_n: int = Field(4, ge=1)
    size: int = Field(1024, ge=16)              # images are resized to size x size (multiple of 16)
    seed: int = 0
    storage: dict[str, Any] = {}                # pipeline.storage.StorageConfig (endpoint, region, retries)
    cache: Optional[str] = None                 # encoded records cached here (folder or s3://); None: not cached


class LoraSection(_Section):
    rank: int = Field(16, ge=1)
    alpha: Optional[float] = None               # None: = rank
    targets: list[str] = DEFAULT_TARGETS


class TrainSection(_Section):
    steps: int = Field(ge=1)
    batch_size: int = Field(1, ge=1)            # per worker and micro-step
    grad_accum: int = Field(1, ge=1)            # micro-steps per optimizer step
    lr: float = Field(1e-4, gt=0)
    warmup: int = Field(0, ge=0)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    reference_drop: Optional[tuple[float, float]] = (0.0, 0.9)   # per sample ~ U[lo, hi]; None: off
    guidance: Optional[float] = None            # Flux distilled guidance input; None: the family default
    gradient_checkpointing: bool = True
    mixed_precision: Literal["auto", "bf16", "no"] = "auto"      # auto: bf16 autocast on CUDA only

    @field_validator("reference_drop")
    @classmethod
    def _range(cls, v):
        if v is not None and not 0.0 <= v[0] <= v[1] <= 1.0:
            raise ValueError(f"reference_drop must satisfy 0 <= low <= high <= 1, got {list(v)}")
        return v


class ValidationSection(_Section):
    drop_ratios: list[float] = [0.0, 0.5, 0.9]  # fixed drop ratios the validation loss is logged at
    every: int = Field(50, ge=1)

    @field_validator("drop_ratios")
    @classmethod
    def _ratios(cls, v):
        if any(not 0.0 <= r < 1.0 for r in v):
            raise ValueError(f"validation.drop_ratios take ratios in [0, 1), got {v}")
        return v


class ScalingSection(_Section):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool | Literal["auto"] = "auto"
    strategy: Literal["ddp", "fsdp"] = "ddp"    # fsdp: full fine-tuning on CUDA (sharded weights/optimizer)
    threads: int = Field(1, ge=1)               # torch threads (and Ray CPUs) per CPU worker
    gpu_memory_gib: float = 80.0                # for the dry run's fit check


class FinetuneConfig(_Section):
    name: str
    storage_path: str = "~/.cache/dropedit/finetune"   # checkpoints: local or s3://
    output: str                                 # the adapter (LoRA) or the pipeline (full), local folder
    model: ModelSection
    data: DataSection
    lora: Optional[LoraSection] = LoraSection()  # None (null): full fine-tuning
    train: TrainSection
    validation: ValidationSection = ValidationSection()
    scaling: ScalingSection = ScalingSection()
    checkpoint_every: int = Field(100, ge=1)
    report_every: int = Field(10, ge=1)
    fail_at_step: Optional[int] = None          # tests only: the first attempt fails after this step

    @model_validator(mode="after")
    def _consistent(self):
        if self.data.size % 16:
            raise ValueError(f"data.size must be a multiple of 16 (8x VAE, 2x2 packing), got {self.data.size}")
        if self.model.name in ("flux-kontext", "qwen-image-edit", "qwen-image-edit-plus") and not self.model.path:
            raise ValueError(f"model {self.model.name} needs model.path (a local folder or s3:// prefix)")
        return self


def is_finetune_config(raw: dict[str, Any]) -> bool:
    """A fine-tuning config (as opposed to the toy training config): its data section names a manifest."""
    return isinstance(raw.get("data"), dict) and "uri" in raw["data"]


def read_raw(path: str | None, overrides: list[str] = ()) -> dict[str, Any]:
    """The YAML file as a dict with `key.sub=value` overrides applied (`core.assignments`' rules)."""
    raw: dict[str, Any] = {}
    if path:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    return apply_assignments(raw, overrides)


def load_config(path: str | None, overrides: list[str] = ()) -> FinetuneConfig | ToyTrainConfig:
    """The validated config of a YAML file plus overrides: a manifest fine-tune or the toy's training."""
    raw = read_raw(path, overrides)
    if is_finetune_config(raw):
        return FinetuneConfig.model_validate(raw)
    return ToyTrainConfig.model_validate(raw)
