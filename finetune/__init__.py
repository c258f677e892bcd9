"""The one training stack, on Ray Train: fine-tuning a real editing model (FLUX.1-Kontext, Qwen-Image-Edit,
Qwen-Image-Edit-Plus, or their tiny and toy stand-ins) on edit triplets from a manifest, and training the toy model
on its procedural data. LoRA or full fine-tuning, Sparse Context's reference-token drop, the family's
flow-matching objective with the encoders frozen.

`config.py` the one config loader (a manifest fine-tune, or the toy's `toy_config.py`); `data.py` the manifest
as Ray Data datasets, one per worker; `toy_source.py` the toy data as a source each worker draws itself;
`objective.py` (+ `flux.py`, `qwen.py`, `flow_matching.py`) encoding and the loss per family; `reference_drop.py`
the training-time token drop; `lora.py` adapters for training; `schedule.py` what each step draws (records,
noise, learning rate) as a function of the step; `model.py` the trainable transformer (LoRA, checkpointing,
DDP/FSDP); `state.py` checkpoints; `worker.py` the loop every worker runs; `toy_init.py`, `toy_run.py`,
`toy_output.py` the toy's start, phases (VAE, then transformer) and output; `driver.py` the `TorchTrainer` and
the output; `plan.py` the `--dry-run` plan. Entry point: `python -m jobs.train CONFIG` (`jobs/train.py`).
"""
