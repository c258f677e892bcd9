"""`dropedit run CONFIG` / `python -m jobs.ablate CONFIG`: run an ablation grid on Ray, write Parquet and the
report.

As the `ray job submit` entrypoint it joins the cluster it is submitted to; on a laptop it starts a
local Ray. The configuration is checked (policies, sizes, output) before Ray or any model starts.

The driver stays small (no torch, no diffusers: README "Scaling"): the checks build every policy and cache,
which imports torch, so a run makes them in a child process that exits before Ray starts; the driver then
reads only the config, the model registry's data and the run's accounting."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from core.malloc_arenas import limit_malloc_arenas


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config (local or s3://)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, dotted keys, e.g. --set actors.max_size=4")
    p.add_argument("--no-report", action="store_true", help="skip the report after the run")
    p.add_argument("--dry-run", action="store_true",
                   help="print the grid, the number of edits and the estimated GPU-hours (FLOP model of the real "
                        "architecture, full context: an upper bound); loads no model, starts no Ray")
    p.add_argument("--records", type=int, default=None, metavar="N",
                   help="with --dry-run: the number of input records (when the input is not reachable here)")
    p.add_argument("--gpu-tflops", type=float, default=None, metavar="T",
                   help="with --dry-run: the GPU's sustained bf16 TFLOP/s (assumption; default 400, an H100)")


def write_run_report(results: str, output: str, storage) -> str:
    """The report beside the results: `OUTPUT/report` (for object storage, written locally and uploaded)."""
    from pipeline import storage as st

    import report

    if "://" not in output:
        out = os.path.join(output, "report")
        report.write_report(results, out, storage=storage)
        return out
    with tempfile.TemporaryDirectory() as tmp:
        report.write_report(results, tmp, storage=storage)
        for name in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, name), "rb") as f:
                st.write_bytes(st.join_uri(output, "report", name), f.read(), storage)
    return st.join_uri(output, "report")


def checked_run(config: str, overrides: list[str]):
    """The config loaded with the policy names checked, expanded once, and every preflight check passed."""
    import policies
    from pipeline.config import expand_run, load_config

    from .preflight import check_run

    expanded = expand_run(load_config(config, overrides, known_policies=policies.REGISTRY))
    check_run(expanded)
    return expanded


def preflight_in_child(config: str, overrides: list[str]) -> None:
    """`checked_run` in a fresh child process (spawned: it imports torch, the driver does not); its error, if
    any, is raised here as it was there."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(_check, (config, list(overrides)))


def _check(config: str, overrides: list[str]) -> None:
    checked_run(config, overrides)   # nothing to send back but an error


def run(args: argparse.Namespace) -> int:
    limit_malloc_arenas()   # this process drives Ray: before Ray's threads start (core/malloc_arenas.py)
    if getattr(args, "dry_run", False):   # no Ray, exits at once: checked in this process
        from costs import DEFAULT_GPU_TFLOPS
        from pipeline.dry_run import dry_run

        expanded = checked_run(args.config, args.overrides)
        text, _ = dry_run(expanded, args.records, args.gpu_tflops or DEFAULT_GPU_TFLOPS, source=args.config)
        print(text)
        return 0
    from pipeline.config import expand_run, load_config
    from pipeline.graph import run_ablation
    from pipeline.ray_session import init_ray

    preflight_in_child(args.config, args.overrides)
    cfg = load_config(args.config, args.overrides)   # policy names: checked by the child
    expanded = expand_run(cfg)   # the one expansion of the grid the graph uses
    init_ray()
    summary = run_ablation(expanded)
    print(json.dumps(summary))
    if not args.no_report:
        print(json.dumps({"report": write_run_report(summary["results"], cfg.output, cfg.storage)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.ablate", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as err:   # bad input: say what, not a traceback
        print(f"jobs.ablate: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
