"""`dropedit simulate CONFIG --gpus N`: the run's graph on N simulated GPUs with a SYNTHETIC model (FLOP-timed sleeps).

Starts its own local Ray cluster with N logical GPUs (never joins another), runs `dropedit run`'s graph with
each actor's model replaced by a synthetic one that sleeps, scaled down, for the time the FLOP model gives each
configuration on the real architecture at --tflops, after a --load-s model load, with heavy-tailed noise. The
input is --records synthetic records; --configurations C replaces the grid by full + C-1 random arms. Faults:
--kill-actors K kills K actors mid-edit at random simulated times, --write-faults P fails that fraction of
storage writes (retried); --kill-nodes K kills every actor of K simulated nodes (--gpus-per-node each) mid-edit,
their units redone. --gpus-per-actor K serves K logical GPUs from one actor process (num_gpus K, K units at
once on its threads, each on its own logical GPU): for pools whose processes would not fit memory. Prints a table, then the figures as JSON on the last line; all times are simulated
seconds."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from core.malloc_arenas import limit_malloc_arenas


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config (its models, policies, sizes and steps are simulated)")
    p.add_argument("--gpus", type=int, required=True, help="logical GPUs of the local cluster, one actor each")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, as for `dropedit run`")
    p.add_argument("--records", type=int, default=700, help="synthetic records (PIE-Bench has 700)")
    p.add_argument("--configurations", type=int, default=None,
                   help="replace the grid by full + this many minus one random arms (1: full alone)")
    p.add_argument("--tflops", type=float, default=400.0, help="assumed sustained bf16 TFLOP/s per GPU (H100-like)")
    p.add_argument("--load-s", type=float, default=60.0, help="simulated model load time per actor")
    p.add_argument("--noise", type=float, default=0.15, help="lognormal sigma of edit times (plus 2%% 3x stragglers)")
    p.add_argument("--scale", type=float, default=None,
                   help="wall seconds per simulated second (default: the ideal makespan takes ~300 s here)")
    p.add_argument("--kill-actors", type=int, default=0, help="actors killed mid-edit at random simulated times")
    p.add_argument("--kill-nodes", type=int, default=0,
                   help="simulated nodes whose actors all die mid-edit at a random simulated time (units redone)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs of a simulated node, for --kill-nodes")
    p.add_argument("--gpus-per-actor", type=int, default=1,
                   help="logical GPUs one actor process serves (num_gpus K, K units at once; divides --gpus)")
    p.add_argument("--trace", default=None, help="write the per-unit trace (JSON lines) to this file")
    p.add_argument("--write-faults", type=float, default=0.0, help="fraction of storage writes that fail (retried)")
    p.add_argument("--batch-size", type=int, default=1, help="units per actor call")
    p.add_argument("--cpus", type=int, default=None, help="logical CPUs of the local cluster, for the CPU stages (the actors take none); default: this "
                        "machine's cores, at least 4 (more only starts more worker processes on the same cores)")
    p.add_argument("--output", default=None, help="results folder (default: a temporary one, removed after)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-memory-check", action="store_true",
                   help="start even if the actor processes would not fit the memory available")


def _check(args: argparse.Namespace) -> None:
    if args.gpus < 1 or args.records < 1:
        raise ValueError("--gpus and --records must be at least 1")
    if args.configurations is not None and args.configurations < 1:
        raise ValueError("--configurations must be at least 1 (full alone)")
    if args.kill_nodes < 0 or args.gpus_per_node < 1:
        raise ValueError("--kill-nodes must be at least 0 and --gpus-per-node at least 1")
    if args.kill_nodes > -(-args.gpus // args.gpus_per_node):
        raise ValueError(f"--kill-nodes {args.kill_nodes}: only {-(-args.gpus // args.gpus_per_node)} simulated "
                         f"nodes of {args.gpus_per_node} GPUs")
    if args.gpus_per_actor < 1 or args.gpus % args.gpus_per_actor:
        raise ValueError(f"--gpus-per-actor {args.gpus_per_actor} must be at least 1 and divide --gpus {args.gpus}")
    if args.kill_nodes and args.gpus_per_node % args.gpus_per_actor:
        raise ValueError("--gpus-per-node must be a multiple of --gpus-per-actor (an actor's GPUs on one node)")
    if not 0 <= args.write_faults < 1:
        raise ValueError("--write-faults must be in [0, 1)")


def start_ray(gpus: int, cpus: int, attempts: int = 3) -> None:
    """A local Ray cluster of its own. Ray gives its raylet 30 s to register, which a loaded machine can miss:
    try again, after `ray.shutdown` has stopped what the failed start left."""
    import ray

    for attempt in range(attempts):
        try:
            ray.init(address="local", num_gpus=gpus, num_cpus=cpus, include_dashboard=False)
            return
        except Exception as err:   # noqa: BLE001 - Ray raises a bare Exception for this timeout
            ray.shutdown()
            if "timed out during startup" not in str(err) or attempt == attempts - 1:
                raise


def run(args: argparse.Namespace) -> int:
    limit_malloc_arenas()   # this process drives Ray: before Ray's threads start (core/malloc_arenas.py)
    _check(args)
    with tempfile.TemporaryDirectory(prefix="dropedit-sim-") as tmp:
        output = os.path.abspath(args.output or tmp)
        from simulation.cluster import memory_shortfall, simulate, simulation_config, table

        if not args.no_memory_check and (why := memory_shortfall(args.gpus // args.gpus_per_actor)):
            raise ValueError(why)

        cfg = simulation_config(args.config, args.overrides, args.gpus, output, args.records, args.configurations,
                                args.write_faults, args.batch_size, args.gpus_per_actor)
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        start_ray(args.gpus, args.cpus or max(4, os.cpu_count() or 1))
        try:
            result = simulate(cfg, args.gpus, args.records, tflops=args.tflops, load_s=args.load_s,
                              noise=args.noise, scale=args.scale, kills=args.kill_actors, seed=args.seed,
                              node_kills=args.kill_nodes, per_node=args.gpus_per_node,
                              trace=os.path.abspath(args.trace) if args.trace else None,
                              per_actor=args.gpus_per_actor)
        finally:
            ray.shutdown()
    print("SYNTHETIC model: edit times from the FLOP model, not measured")
    print(table(result))
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.simulate", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as err:
        print(f"jobs.simulate: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
