"""`python -m jobs.train CONFIG`: fine-tune an editing model, or train the toy one, on Ray Train (a `TorchTrainer`).

One driver for both (`finetune/`): a config whose `data` names a manifest (`data.uri`: configs/finetune/*.yaml)
fine-tunes any supported model (FLUX.1-Kontext, Qwen-Image-Edit, Qwen-Image-Edit-Plus, their tiny stand-ins, the
toy model) on its edit triplets with LoRA or full fine-tuning and reference-token drop (`--dry-run` prints the
plan: workers, memory per GPU, tokens and FLOPs per step, steps per epoch). The toy configs
(configs/train_toy*.yaml, configs/finetune_toy_*.yaml) train on the procedural toy data
(`finetune/toy_source.py`) in two phases: the VAE on reconstruction, then the transformer on conditional flow
matching (`finetune/toy_run.py`). Every step's records and draws are functions of the seed, phase, step and
rank, so a resumed run continues exactly where its last checkpoint left it.

Re-running the same command resumes from the latest checkpoint in `storage_path/name` (Ray Train V2
restores it); `--fresh` starts over under a new run name. Checkpoints hold the model, the optimizer and the
loss log; rank 0 also mirrors the log beside them as it goes (`loss.jsonl`; the toy's `loss.csv`). At the end
the trained pipeline (or the LoRA adapter alone) is written to `output`, with `loss.json` beside it.

Toy fine-tuning (Sparse Context): `init_from` a saved pipeline folder (e.g. models/toy-flux-kontext) starts the
transformer phase from that model; `transformer.reference_drop: [lo, hi]` drops per sample a share ~ U[lo, hi]
of the reference tokens at random; `lora_rank: R` trains a LoRA adapter on the attention projections instead
of all weights, and then `output` receives the adapter alone (load it with
`actors.load_pipeline(name, path=BASE, lora=output)`).
"""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None, help="YAML training config (e.g. configs/train_toy.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, dotted keys, e.g. --set transformer.steps=10")
    p.add_argument("--fresh", action="store_true", help="start a new run instead of resuming `name`")
    p.add_argument("--max-failures", type=int, default=2, help="worker-group restarts from the last checkpoint")
    p.add_argument("--dry-run", action="store_true",
                   help="fine-tuning configs: print the plan (workers, memory, tokens, FLOPs, steps per epoch) and exit")


def run(args: argparse.Namespace) -> int:
    from finetune.config import FinetuneConfig, load_config
    from finetune.driver import fit

    from pipeline.ray_session import init_ray

    cfg = load_config(args.config, args.overrides)   # validated in the driver, before any worker starts
    if args.dry_run:
        if not isinstance(cfg, FinetuneConfig):
            raise SystemExit("--dry-run is for fine-tuning configs (data.uri); the toy config has no plan to print")
        from finetune.plan import describe, plan
        print(describe(plan(cfg)))
        return 0
    init_ray()
    print(json.dumps(fit(cfg, fresh=args.fresh, max_failures=args.max_failures)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
