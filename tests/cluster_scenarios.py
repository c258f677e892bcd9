"""The runs behind tests/test_autoscaling.py and tests/test_node_loss.py. Each runs as a process of its own, the
driver of a multi-node cluster of its own (the test session's Ray is left as it is):

    python tests/cluster_scenarios.py autoscaling WORK_DIR
    python tests/cluster_scenarios.py node-loss WORK_DIR
    python tests/cluster_scenarios.py big-card WORK_DIR

The last line printed is JSON: the node-count timeline, the run's figures and the row accounting.

The run is `dropedit run`'s graph (`pipeline.graph.run_ablation`: records -> units -> CPU load -> GPU actor pool
-> CPU finish -> Parquet) with a synthetic GPU stage, `SleepEditActor`: it asks Ray for one GPU (a resource
count: no device is touched), sleeps `edit_s` per edit and returns the source as the edit. It is a
`pipeline.unit_stage.UnitActor`, so units, pairing, retries and writes are the pipeline's own; it imports no
torch, so a fresh worker node's actor starts in seconds on a 2-core machine."""
from __future__ import annotations

import io
import json
import os
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import PIL.Image

sys.path.insert(0, str(Path(__file__).resolve().parent))   # cluster_helpers, when run as a script

from cluster_helpers import (
    FakeAutoscalingCluster,
    NodeTimeline,
    free_port,
    gpu_worker_nodes,
    new_temp_dir,
    ray_dir,
    ray_env,
    stop_processes,
)

from pipeline.config import RunConfig, parse_config
from pipeline.configuration import Configuration
from pipeline.records import utcnow
from pipeline.unit_stage import UnitActor, UnitEdit


class SleepEditActor(UnitActor):
    """The GPU stage with a synthetic model (see the module docstring). Each edit it starts is appended to
    `log` (node, pid, record, configuration, whether its row is written): a lost node's interrupted edits show
    there, and their rows in the results come from another node."""

    def __init__(self, configs: dict[str, dict[str, Any]], run_id: str, edit_s: float, log: str) -> None:
        import ray

        super().__init__(configs, run_id)
        self.node = ray.get_runtime_context().get_node_id()
        self.device = f"fake-gpu@{self.node[:12]}"
        self.edit_s, self.log = edit_s, log

    def edit(self, config: Configuration, inputs: dict[str, Any], unit: Mapping[str, Any],
             budget: list[int] | None) -> UnitEdit:
        started = utcnow()
        entry = {"node": self.node, "pid": os.getpid(), "record": str(unit["id"]), "config": config.config_id,
                 "t": time.time(), "emit": config.config_id in unit["config_ids"]}   # else a split unit's `full` re-run
        with open(self.log, "a") as f:   # one short append per edit: whole lines from several processes
            f.write(json.dumps(entry) + "\n")
        time.sleep(self.edit_s)
        row = self.ok_row(config, unit, started)
        row.update(runtime_s=self.edit_s, loop_s=self.edit_s)
        return UnitEdit(config, row, emit=True, image=inputs["source"])


def write_manifest(folder: Path, records: int) -> str:
    """`records` edit requests on one small image (the synthetic model never looks at it)."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    PIL.Image.new("RGB", (32, 32), (90, 120, 200)).save(buf, format="PNG")
    (folder / "source.png").write_bytes(buf.getvalue())
    lines = [json.dumps({"id": f"rec-{i:04d}", "image": "source.png", "instruction": "synthetic edit"})
             for i in range(records)]
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return str(folder / "manifest.jsonl")


def run_config(work: Path, records: int, pool: tuple[int, int], write_faults: float = 0.0) -> RunConfig:
    """A run of `records` x 2 configurations (`full` and one `random`) on GPU actors of 1 GPU each."""
    storage: dict[str, Any] = {"inject_write_faults": write_faults}
    if write_faults:   # enough attempts that the injected faults are absorbed (0.02 ** 8 per write)
        storage.update(retries=8, retry_base_delay_s=0.02)
    return parse_config({
        "input": write_manifest(work / "input", records), "output": str(work / "out"),
        "models": [{"name": "tiny-flux-kontext"}], "policies": [{"name": "full"}, {"name": "random", "ratio": 0.5}],
        "resolutions": [64], "steps": 2, "storage": storage, "metrics": {"compute": []},
        "actors": {"num_gpus": 1, "num_cpus": 0, "min_size": pool[0], "max_size": pool[1], "batch_size": 1}})


def sleep_factory(edit_s: float, log: str) -> Callable[..., tuple[type, dict[str, Any]]]:
    """`pipeline.graph.ActorFactory` for `SleepEditActor`."""
    def factory(configs: Sequence[Configuration], cfg: RunConfig, run_id: str) -> tuple[type, dict[str, Any]]:
        return SleepEditActor, {"configs": {c.config_id: c.to_row() for c in configs}, "run_id": run_id,
                                "edit_s": edit_s, "log": log}
    return factory


def row_accounting(cfg: RunConfig, expected_pairs: int) -> dict[str, int]:
    """Rows written, by (record, configuration): ok, error, lost (a pair with no row), duplicated (extra rows)."""
    from pipeline.graph import results_uri
    from pipeline.resume import read_results

    table = read_results(results_uri(cfg), cfg.storage, columns=["config_id", "record_id", "status", "device"])
    rows = [] if table is None else table.to_pylist()
    pairs = Counter((r["record_id"], r["config_id"]) for r in rows)
    return {"rows": len(rows), "rows_ok": sum(r["status"] == "ok" for r in rows),
            "rows_error": sum(r["status"] != "ok" for r in rows), "rows_lost": expected_pairs - len(pairs),
            "rows_duplicated": len(rows) - len(pairs), "pairs": len(pairs)}


def edit_log(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()] \
        if os.path.exists(path) else []


def images_written(work: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(work / "out" / "images"))


# ------------------------------------------------------------------------------------------ autoscaling

AUTOSCALING = {"records": 8, "edit_s": 3.0, "pool": (1, 2), "idle_timeout_minutes": 0.25, "max_gpu_workers": 2}


def autoscaling(work: Path) -> dict[str, Any]:
    """A CPU-only head and a GPU worker type (min 0, max 2): the pool's demand brings GPU workers up, the idle
    timeout takes them down; the GPU node count is polled throughout."""
    import ray

    from pipeline.config import expand_run
    from pipeline.graph import run_ablation

    p = AUTOSCALING
    gpu_type = {"resources": {"CPU": 1, "GPU": 1, "object_store_memory": 150 * 2**20}, "node_config": {},
                "min_workers": 0, "max_workers": p["max_gpu_workers"]}
    cluster = FakeAutoscalingCluster({"ray.worker.gpu": gpu_type}, head_cpus=4,
                                     idle_timeout_minutes=p["idle_timeout_minutes"],
                                     temp_dir=os.environ["RAY_TMPDIR"])
    out: dict[str, Any] = {"params": {**p, "pool": list(p["pool"])}}
    try:
        cluster.start()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        timeline = NodeTimeline().start()
        time.sleep(2)
        out["gpu_nodes_at_start"] = len(gpu_worker_nodes())
        cfg = run_config(work, p["records"], p["pool"])
        run = expand_run(cfg)
        timeline.mark("run starts")
        summary = run_ablation(run, factory=sleep_factory(p["edit_s"], str(work / "edits.jsonl")))
        timeline.mark("run ends")
        out["run_s"] = timeline.events[-1][0] - timeline.events[-2][0]
        out["released"] = timeline.wait_for(0, timeout_s=240)
        timeline.mark("all GPU nodes released" if out["released"] else "GPU nodes still up after 240 s")
        timeline.stop()
        out.update(timeline=timeline.points, events=timeline.events, timeline_text=timeline.render(),
                   summary={k: v for k, v in summary.items() if k != "results"},
                   **row_accounting(cfg, p["records"] * len(run.configurations)),
                   edit_nodes=len({e["node"] for e in edit_log(str(work / "edits.jsonl"))}))
        if not out["released"]:
            out["autoscaler_log"] = cluster.log_tail("monitor.log", 4000)
    finally:
        ray.shutdown()
        out["stopped_pids"] = len(cluster.stop())
    return out


# -------------------------------------------------------------------------------------------- node loss

NODE_LOSS = {"records": 12, "edit_s": 2.0, "pool": (3, 3), "gpu_nodes": 3, "remove": 2, "replace": 0,
             "remove_at": 0.3, "write_faults": 0.02, "run_timeout_s": 600}


def with_retries(start: Callable[[], Any], attempts: int = 3) -> Any:
    """`start()` again when a node fails to start: on a loaded machine its raylet waits only 15 s (hard-coded)
    for its dashboard agent, then exits, and Ray raises; the half-started node never registers."""
    for _ in range(attempts - 1):
        try:
            return start()
        except Exception as err:   # Ray raises a bare Exception for this
            if "timed out during startup" not in str(err):
                raise
    return start()


def add_gpu_node(cluster: Any) -> Any:
    """One worker node with one (fake) GPU and one CPU."""
    return with_retries(lambda: cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=150 * 2**20))


def remove_busy_nodes(cluster: Any, count: int) -> list[str]:
    """Remove `count` worker nodes whose GPU is in use (an actor of the pool runs there), abruptly as a
    preempted spot instance goes; returns their node ids."""
    import ray
    from ray._private import state

    free = state.available_resources_per_node()
    driver = ray._private.worker.global_worker.node._raylet_socket_name   # never the driver's own node
    busy = [n for n in cluster.worker_nodes
            if free.get(n.node_id, {}).get("GPU", 0) < 1 and n._raylet_socket_name != driver]
    gone = busy[:count]
    for node in gone:
        cluster.remove_node(node, allow_graceful=False)
    return [n.node_id for n in gone]


def node_loss(work: Path) -> dict[str, Any]:
    """`ray.cluster_utils.Cluster`: a CPU head and 3 one-GPU workers; 2 busy workers removed mid-run, then 2
    fresh ones added (the autoscaler's replacements on a real cluster); with 2 % of writes failing."""
    import ray
    from ray.cluster_utils import Cluster

    from pipeline.config import expand_run
    from pipeline.graph import run_ablation

    p = NODE_LOSS
    cluster = with_retries(lambda: Cluster(initialize_head=True, head_node_args={
        "num_cpus": 4, "num_gpus": 0, "temp_dir": ray_dir(os.environ["RAY_TMPDIR"]), "include_dashboard": False,
        "object_store_memory": 200 * 2**20, "dashboard_agent_listen_port": free_port()}))   # not the default 52365
    out: dict[str, Any] = {"params": {**p, "pool": list(p["pool"])}}
    try:
        for _ in range(p["gpu_nodes"]):
            add_gpu_node(cluster)
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        timeline = NodeTimeline().start()
        cfg = run_config(work, p["records"], p["pool"], p["write_faults"])
        run = expand_run(cfg)
        expected = p["records"] * len(run.configurations)
        result: dict[str, Any] = {}
        log = str(work / "edits.jsonl")
        thread = threading.Thread(target=lambda: result.update(run_ablation(run, factory=sleep_factory(
            p["edit_s"], log))), daemon=True)
        timeline.mark("run starts")
        thread.start()
        out.update(_lose_nodes_mid_run(cluster, work, thread, timeline, expected))
        thread.join(timeout=p["run_timeout_s"])
        timeline.mark("run ends" if not thread.is_alive() else f"run still going after {p['run_timeout_s']} s")
        out["finished"] = not thread.is_alive()
        timeline.stop()
        out.update(timeline=timeline.points, events=timeline.events, timeline_text=timeline.render(),
                   **row_accounting(cfg, expected), **_redone(log, out.get("removed_nodes", [])))
    finally:
        ray.shutdown()
        cluster.shutdown()
    return out


def _lose_nodes_mid_run(cluster: Any, work: Path, thread: threading.Thread, timeline: NodeTimeline,
                        expected: int) -> dict[str, Any]:
    """Waits until `remove_at` of the rows' images are written, removes the busy nodes, adds replacements."""
    p = NODE_LOSS
    while thread.is_alive() and images_written(work) < p["remove_at"] * expected:
        time.sleep(0.2)
    if not thread.is_alive():
        return {"removed_nodes": [], "images_at_removal": images_written(work)}
    at = images_written(work)
    removed = remove_busy_nodes(cluster, p["remove"])
    timeline.mark(f"removed {len(removed)} busy GPU nodes ({at}/{expected} images written)")
    time.sleep(5)   # what the run does with fewer nodes before replacements come
    for _ in range(p["replace"]):
        add_gpu_node(cluster)
    timeline.mark(f"added {p['replace']} replacement GPU nodes")
    return {"removed_nodes": removed, "images_at_removal": at}


def _redone(log: str, removed: list[str]) -> dict[str, Any]:
    """Edits started on a removed node, and whether each was run again elsewhere (written edits only: a finer
    unit's re-run of `full` as its timing partner is not a redo)."""
    edits = [e for e in edit_log(log) if e["emit"]]
    lost = {(e["record"], e["config"]) for e in edits if e["node"] in removed}
    elsewhere = {(e["record"], e["config"]) for e in edits if e["node"] not in removed}
    runs = Counter((e["record"], e["config"]) for e in edits)
    return {"edits_started": len(edits), "edits_on_removed_nodes": len(lost),
            "edits_on_removed_nodes_redone_elsewhere": len(lost & elsewhere),
            "edits_run_more_than_once": sum(n > 1 for n in runs.values())}


# ---------------------------------------------------------------------------------------------- big card

BIG_CARD = {"records": 4, "edit_s": 0.5}


def big_card_config(work: Path, records: int) -> RunConfig:
    """Qwen-Image-Edit `full` + SpotEdit at 1024² (67.9 GiB: the 80 GB card) and 2048² (104.7 GiB: the big card)."""
    return parse_config({
        "input": write_manifest(work / "input", records), "output": str(work / "out"),
        "models": [{"name": "qwen-image-edit", "path": "/not/loaded"}],
        "policies": [{"name": "full"}, {"name": "spotedit"}], "resolutions": [1024, 2048], "steps": 2,
        "metrics": {"compute": []},
        "actors": {"num_gpus": 1, "num_cpus": 0, "min_size": 1, "max_size": 1, "batch_size": 1,
                   "big_card": {"card_gb": 141, "resource": "big_card", "max_size": 1}}})


def big_card(work: Path) -> dict[str, Any]:
    """`ray.cluster_utils.Cluster`: a CPU head, one plain GPU node and one declaring `big_card` (as
    cluster.yaml's H200 type does); the groups an 80 GB card cannot hold must run on the big node."""
    import ray
    from ray.cluster_utils import Cluster

    from pipeline.config import expand_run
    from pipeline.graph import results_uri, run_ablation
    from pipeline.resume import read_results

    p = BIG_CARD
    cluster = with_retries(lambda: Cluster(initialize_head=True, head_node_args={
        "num_cpus": 4, "num_gpus": 0, "temp_dir": ray_dir(os.environ["RAY_TMPDIR"]), "include_dashboard": False,
        "object_store_memory": 200 * 2**20, "dashboard_agent_listen_port": free_port()}))
    out: dict[str, Any] = {"params": p}
    try:
        plain = add_gpu_node(cluster)
        big = with_retries(lambda: cluster.add_node(num_cpus=1, num_gpus=1, resources={"big_card": 1},
                                                    object_store_memory=150 * 2**20))
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        cfg = big_card_config(work, p["records"])
        run = expand_run(cfg)
        summary = run_ablation(run, factory=sleep_factory(p["edit_s"], str(work / "edits.jsonl")))
        rows = read_results(results_uri(cfg), cfg.storage, columns=["width", "policy", "device"]).to_pylist()
        nodes = {plain.node_id[:12]: "plain", big.node_id[:12]: "big"}
        out.update(pools=[[q["name"], q["resources"]] for wave in summary["pools"] for q in wave],
                   placed=sorted(Counter((r["width"], nodes.get(r["device"].split("@")[-1], "?"))
                                         for r in rows).items()),
                   **row_accounting(cfg, p["records"] * len(run.configurations)))
    finally:
        ray.shutdown()
        cluster.shutdown()
    return out


SCENARIOS = {"autoscaling": autoscaling, "node-loss": node_loss, "big-card": big_card}


def keep_logs(temp_dir: str, to: Path) -> None:
    """The cluster's Ray logs (autoscaler, raylets, GCS; not the workers') into the run's folder, for a failure."""
    names = ("monitor.*", "raylet*.out", "raylet*.err", "gcs_server.*", "dashboard_agent*.log")
    for logs in Path(temp_dir).glob("ray/session_2*/logs"):
        dest = to / logs.parent.name
        dest.mkdir(parents=True, exist_ok=True)
        for pattern in names:
            for f in logs.glob(pattern):
                shutil.copy2(f, dest / f.name)


def main(argv: list[str]) -> int:
    """`NAME WORK [JSON]`: the scenario, its folder, and overrides of its parameters (e.g. '{"replace": 0}')."""
    name, work = argv[0], Path(argv[1])
    params = {"autoscaling": AUTOSCALING, "node-loss": NODE_LOSS, "big-card": BIG_CARD}[name]
    params.update(json.loads(argv[2]) if len(argv) > 2 else {})
    temp_dir = os.environ.get("RAY_TMPDIR") or new_temp_dir()
    os.environ.update(ray_env(temp_dir))   # our own Ray folder, even for `Cluster`'s defaults; nodes inherit it
    try:
        out = SCENARIOS[name](work)
    finally:
        stop_processes(temp_dir)
        keep_logs(temp_dir, work / "ray-logs")
        shutil.rmtree(temp_dir, ignore_errors=True)
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
