"""Fine-tuning a real editing model (FLUX.1-Kontext, Qwen-Image-Edit, Qwen-Image-Edit-Plus, or their tiny and toy
stand-ins) on edit triplets from a manifest, on Ray Train: LoRA (default) or full fine-tuning, Sparse Context's
reference-token drop, the family's flow-matching objective with the encoders frozen.

`config.py` the validated config; `data.py` the manifest as Ray Data datasets, one per worker; `objective.py`
(+ `flux.py`, `qwen.py`) encoding and the loss per family; `schedule.py` what each step draws (records, noise,
learning rate) as a function of the step; `model.py` the trainable transformer (LoRA, checkpointing, DDP/FSDP);
`state.py` checkpoints; `worker.py` the loop every worker runs; `driver.py` the `TorchTrainer` and the output;
`plan.py` the `--dry-run` plan. Entry point: `python -m jobs.train CONFIG` (`jobs/train.py`).
"""
