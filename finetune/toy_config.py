"""The toy model's training config (configs/train_toy*.yaml, configs/finetune_toy_*.yaml): the same validated,
frozen pydantic sections as a manifest fine-tune (`finetune.config`), with the toy's own keys, so that every toy
config written so far loads as it is. Two phases: `vae` (reconstruction) then `transformer` (flow matching) on
the procedural toy data (`finetune.toy_source`); `init_from` a saved pipeline (fine-tuning: transformer phase
only) or another run's checkpoint folder (its trained VAE)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToyScaling(_Section):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool | Literal["auto"] = "auto"


class ToyData(_Section):
    seed: int = 0
    val_seed: int = 999
    val_n: int = Field(16, ge=1)
    categories: Optional[list[str]] = None     # the training records' categories, cycled; None: toy.data's cycle

    @field_validator("categories")
    @classmethod
    def _known(cls, v):
        from toy.data import CATEGORIES

        unknown = set(v or ()) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"data.categories: unknown {sorted(unknown)}; accepted: {', '.join(CATEGORIES)}")
        return v


class VaePhase(_Section):
    steps: int = Field(2500, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup: int = Field(50, ge=0)
    crop: int = Field(64, ge=8)                # random crops (8 px aligned): a quarter of the cost per image


class TransformerPhase(_Section):
    steps: int = Field(4000, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(5e-4, gt=0)
    warmup: int = Field(100, ge=0)
    reference_drop: Optional[tuple[float, float]] = None   # [lo, hi]: per sample a drop ratio ~ U[lo, hi]
    edit_weight: Optional[float] = None        # w: the tokens an edit changes weigh 1 + w in the loss
    # the training σ's logit-normal location (SD3's m): > 0 trains nearer noise, where the toy's memorisation
    # test (docs/toy-v3-pilots, pilot S) learnt the edits' new content fastest
    sigma_logit_mean: float = Field(0.0, ge=-3.0, le=3.0)
    val_drop: Optional[float] = 0.5            # validation is also logged at this fixed drop ratio (None: not)
    val_drop_sweep: Optional[list[float]] = [0.0, 0.25, 0.5, 0.75, 0.9]   # evaluated once at the end

    @field_validator("reference_drop", mode="before")
    @classmethod
    def _pair(cls, v):
        if v is not None and (not isinstance(v, (list, tuple)) or len(v) != 2):
            raise ValueError(f"transformer.reference_drop must be [low, high] or null, got {v!r}")
        if v is not None and not 0.0 <= float(v[0]) <= float(v[1]) <= 1.0:
            raise ValueError(f"transformer.reference_drop must satisfy 0 <= low <= high <= 1, got {v!r}")
        return v

    @field_validator("edit_weight")
    @classmethod
    def _weight(cls, v):
        if v is not None and v < 0:
            raise ValueError(f"transformer.edit_weight must be >= 0, got {v!r}")
        return v

    @model_validator(mode="after")
    def _ratios(self):
        for ratio in [self.val_drop, *(self.val_drop_sweep or ())]:
            if ratio is not None and not 0.0 <= float(ratio) <= 1.0:
                raise ValueError(f"transformer.val_drop / val_drop_sweep take ratios in [0, 1], got {ratio!r}")
        return self


class GrowSpec(_Section):
    """Grow `init_from`'s transformer to the `model` section's block counts (`finetune.toy_grow`): new blocks
    appended with zeroed gates (the grown model starts as the saved one), seeded by `seed`; `copy_heads`
    initialises the new dual blocks' image attention as copy heads."""
    copy_heads: bool = False
    seed: int = 0


class ToyTrainConfig(_Section):
    name: str = "toy-flux-kontext"
    storage_path: str = "~/.cache/dropedit/train"
    output: str = "models/toy-flux-kontext"
    threads: int = Field(1, ge=1)              # torch threads (and Ray CPUs) per CPU worker
    scaling: ToyScaling = ToyScaling()
    model: dict[str, Any] = {}                 # toy.model.ToyModelConfig keys
    data: ToyData = ToyData()
    vae: VaePhase = VaePhase()
    transformer: TransformerPhase = TransformerPhase()
    checkpoint_every: int = Field(100, ge=1)
    report_every: int = Field(25, ge=1)
    init_from: Optional[str] = None            # a run's checkpoint folder (its VAE) or a saved pipeline folder
    lora_rank: Optional[int] = None            # None: full fine-tuning; R: a rank-R LoRA adapter, base frozen
    lora_alpha: Optional[float] = None         # None: = rank (scale 1)
    lora_targets: Optional[list[str]] = None   # None: finetune.lora.DEFAULT_TARGETS (the attention projections)
    fail_at_step: Optional[int] = None         # tests only: the first attempt fails at this transformer step
    grow: Optional[GrowSpec] = None            # init_from a smaller saved pipeline: grow it to `model`'s blocks
    # what the transformer predicts: the velocity, or x0 minus the reference (the copy prior,
    # actors.reference_residual), reading z_t (reference_residual) or the noisy residual (residual_flow); a
    # velocity model continued with a prior starts with its output layer zeroed (finetune.toy_copy_prior)
    prediction: Literal["velocity", "reference_residual", "residual_flow"] = "velocity"
    # the frozen T5 reads its neighbour words at this attention bias (toy.text_order), so that word
    # order reaches the transformer; applied to init_from's or the seeded encoder, the same on every resume
    text_order: Optional[float] = Field(None, gt=0)

    @model_validator(mode="after")
    def _lora(self):
        if self.lora_rank is not None:
            if self.lora_rank < 1:
                raise ValueError(f"lora_rank must be a positive integer, got {self.lora_rank!r}")
            if not is_pipeline_folder(self.init_from):
                raise ValueError("lora_rank needs init_from = a saved pipeline folder: "
                                 "an adapter adapts a trained base")
        return self

    @model_validator(mode="after")
    def _grow(self):
        if self.grow is not None:
            if not is_pipeline_folder(self.init_from):
                raise ValueError("grow needs init_from = a saved pipeline folder: it grows a trained transformer")
            if self.lora_rank is not None:
                raise ValueError("grow and lora_rank exclude each other: a frozen base would keep the new "
                                 "blocks at their random weights with closed gates")
        return self

    def check_paths(self) -> None:
        """Fail in the driver, before any worker starts, on an `init_from` that is neither kind of folder."""
        init = self.init_from
        if init and not is_pipeline_folder(init) and not (Path(os.path.expanduser(init)) / "state.pt").is_file():
            raise ValueError(f"init_from {init}: neither a saved pipeline (model_index.json) "
                             "nor a run checkpoint (state.pt)")


def is_pipeline_folder(folder: str | None) -> bool:
    """A folder written by `save_pretrained` (as opposed to a run's checkpoint folder)."""
    return bool(folder) and (Path(os.path.expanduser(folder)) / "model_index.json").is_file()
