"""`dropedit run CONFIG` / `python -m jobs.ablate CONFIG`: run an ablation grid on Ray, write Parquet.

As the `ray job submit` entrypoint it joins the cluster it is submitted to; on a laptop it starts a
local Ray. `dropedit run` then writes the report next to the results."""
from __future__ import annotations

import argparse
import json
import os
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config (local or s3://)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, dotted keys, e.g. --set actors.max_size=4")
    p.add_argument("--no-report", action="store_true", help="skip the report after the run")


def init_ray() -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if os.environ.get("RAY_ADDRESS"):
        ray.init()   # inside `ray job submit`: the cluster's own
    else:
        # Some Ray Data plans stall with fewer than 4 logical CPUs, even on a 2-core machine.
        ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False)


def run(args: argparse.Namespace) -> int:
    import policies
    from pipeline.config import load_config
    from pipeline.graph import run_ablation

    cfg = load_config(args.config, args.overrides, known_policies=policies.REGISTRY)
    init_ray()
    summary = run_ablation(cfg)
    print(json.dumps(summary))
    if not args.no_report:
        from . import report
        out = os.path.join(cfg.output, "report") if "://" not in cfg.output else "report"
        report.write_report(summary["results"], out, storage=cfg.storage)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.ablate", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.no_report = True
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
