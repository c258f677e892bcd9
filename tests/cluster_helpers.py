"""This suite's own multi-node Ray clusters on one machine, started and stopped without touching anyone else's Ray.

The machine is shared (other sessions, a training job on Ray): nothing here runs `ray stop`, uses the default
port 6379 or the default temporary folder /tmp/ray (whose `ray_current_cluster` file other drivers read).
Every cluster gets a temporary folder of its own (`RAY_TMPDIR` too, so nodes started later inherit it) and a
free port; its processes are found by that folder in their command line or environment, or by the process
group its `ray start` opened, and stopped by PID.

- `FakeAutoscalingCluster`: Ray's fake multi-node autoscaler (`ray.cluster_utils.AutoscalingCluster`'s setup:
  the `fake_multinode` provider, `RAY_FAKE_CLUSTER=1`, `AUTOSCALER_UPDATE_INTERVAL_S=1`) with a head started
  by us. The provider starts worker nodes as processes of the head's autoscaler (`monitor.py`), so they land
  in the same folder and process group.
- `NodeTimeline`: polls `ray.nodes()` from the driver and records how many GPU worker nodes are alive.
- `stop_processes`: what both of the above, and `ray.cluster_utils.Cluster` in a subprocess, leave behind."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent

# Short on purpose: Ray's Unix socket paths (<temp>/session_<date>/sockets/plasma_store) must stay < 108 chars.
TEMP_ROOT = "/tmp"
TEMP_PREFIX = "de-ray-"

# The fake provider's base config, as Ray's fake_multi_node/example.yaml has it (the wheel does not ship that
# file, so AutoscalingCluster._generate_config cannot read it here); the node types are filled in per test.
FAKE_BASE_CONFIG: dict[str, Any] = {
    "cluster_name": "fake_multinode",
    "max_workers": 8,
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                 "disable_launch_config_check": True},
    "head_node_type": "ray.head.default",
    "upscaling_speed": 1.0,
    "idle_timeout_minutes": 0.1,
    "auth": {}, "docker": {}, "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
    "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
    "rsync_exclude": [], "rsync_filter": [],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def new_temp_dir() -> str:
    """A folder for one cluster: `RAY_TMPDIR` for its processes, its Ray folder `ray_dir` inside."""
    return tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=TEMP_ROOT)


def ray_dir(temp_dir: str) -> str:
    """Ray's default folder when `RAY_TMPDIR` is `temp_dir` (e.g. where `Cluster` writes its address file)."""
    path = os.path.join(temp_dir, "ray")
    os.makedirs(path, exist_ok=True)
    return path


def _marked(proc: psutil.Process, marker: str, pgids: set[int]) -> bool:
    """Is `proc` one of ours: `marker` (our temp folder) in its command line or environment, or in our group.
    The environment is read raw: Ray's process titles (`ray::DashboardAgent`) overwrite the start of it with
    NULs, where psutil's `environ()` stops reading."""
    try:
        if os.getpgid(proc.pid) in pgids:
            return True
        if any(marker in part for part in proc.cmdline()):
            return True
        with open(f"/proc/{proc.pid}/environ", "rb") as f:
            return marker.encode() in f.read()
    except (psutil.Error, OSError):
        return False


def own_processes(marker: str, pgids: set[int] = frozenset()) -> list[psutil.Process]:
    """Live processes carrying `marker` (never this process)."""
    me = os.getpid()
    return [p for p in psutil.process_iter() if p.pid != me and _marked(p, marker, set(pgids))]


def stop_processes(marker: str, pgids: set[int] = frozenset(), grace_s: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL after `grace_s`, every process of ours; returns the PIDs found. Repeated: a
    raylet dying may have started a worker in between."""
    found: list[int] = []
    for _ in range(3):
        procs = own_processes(marker, pgids)
        if not procs:
            break
        found += [p.pid for p in procs]
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
    return sorted(set(found))


def ray_env(temp_dir: str, **extra: str) -> dict[str, str]:
    """The environment for our Ray processes: our temp folder as Ray's default one, no auth, no usage stats."""
    env = {**os.environ, "RAY_TMPDIR": temp_dir, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


@dataclass
class FakeAutoscalingCluster:
    """A CPU head with Ray's fake autoscaler; `worker_types` are autoscaler node types whose `resources` may
    name GPUs (a plain resource count here: nothing touches a device)."""

    worker_types: dict[str, dict[str, Any]]
    head_cpus: int = 4
    idle_timeout_minutes: float = 0.1
    max_workers: int = 8
    temp_dir: str = field(default_factory=new_temp_dir)
    port: int = field(default_factory=free_port)
    pgid: int | None = None

    @property
    def address(self) -> str:
        from ray._private import services

        return f"{services.get_node_ip_address()}:{self.port}"

    def config(self) -> dict[str, Any]:
        """AutoscalingCluster._generate_config's result, plus the GCS address the provider hands new nodes
        (its default is port 6379: someone else's cluster here)."""
        config = json.loads(json.dumps(FAKE_BASE_CONFIG))
        config["available_node_types"] = {
            **json.loads(json.dumps(self.worker_types)),
            "ray.head.default": {"resources": {"CPU": self.head_cpus, "GPU": 0}, "node_config": {},
                                 "max_workers": 0},
        }
        config["provider"]["gcs_address"] = self.address
        config.update(max_workers=self.max_workers, idle_timeout_minutes=self.idle_timeout_minutes)
        return config

    def start(self, timeout_s: float = 400.0, attempts: int = 4) -> FakeAutoscalingCluster:
        """`ray start --head` with the autoscaler. On a loaded machine a node can fail to start (a raylet waits
        15 s, hard-coded, for its dashboard agent to write its port, then exits): that start is stopped, its
        logs' ends kept for the error, and tried again on another port. (A worker node that fails so, the
        autoscaler launches again by itself.)"""
        errors = []
        for _ in range(attempts):
            try:
                return self._start_head(timeout_s)
            except (RuntimeError, subprocess.TimeoutExpired) as err:
                errors.append(f"{str(err)[-600:]}\n{self.fatal_lines()}")
                self.stop()
                self.port = free_port()
                time.sleep(10)   # a moment for the machine's load to pass
        raise RuntimeError("\n\n".join(errors))

    def _start_head(self, timeout_s: float) -> FakeAutoscalingCluster:
        path = Path(self.temp_dir) / "autoscaling.json"
        path.write_text(json.dumps(self.config()))
        # free ports for what would take a fixed default another cluster on this machine may hold (10001, 52365)
        cmd = ["ray", "start", "--head", f"--port={self.port}", f"--temp-dir={ray_dir(self.temp_dir)}",
               f"--autoscaling-config={path}", f"--num-cpus={self.head_cpus}", "--num-gpus=0",
               "--include-dashboard=false", "--disable-usage-stats", "--object-store-memory=200000000",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"]
        env = ray_env(self.temp_dir, RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
        # a session of its own: every daemon `ray start` leaves, and every node the autoscaler starts, is
        # in this process group
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.pgid = proc.pid
        out, _ = proc.communicate(timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed ({proc.returncode}):\n{out[-2000:]}")
        return self

    def fatal_lines(self) -> str:
        """The raylets' fatal lines (e.g. `Timed out waiting for file .../metrics_agent_port_...`)."""
        lines = [line[:400] for f in Path(ray_dir(self.temp_dir)).glob("session_2*/logs/raylet*.out")
                 for line in f.read_text(errors="replace").splitlines() if "Check failed" in line]
        return "\n".join(lines) or "(no fatal raylet line)"

    def log_tail(self, name: str, chars: int = 2000) -> str:
        """The end of one of the newest session's logs (`monitor.log`: the autoscaler's), for a failure's message."""
        logs = sorted(Path(ray_dir(self.temp_dir)).glob(f"session_*/logs/{name}"))
        return f"--- {name}:\n" + (logs[-1].read_text(errors="replace")[-chars:] if logs else "(none)")

    def stop(self) -> list[int]:
        """Stops every process of this cluster, by PID; returns them."""
        return stop_processes(self.temp_dir, {self.pgid} if self.pgid else set())


def gpu_worker_nodes() -> list[dict[str, Any]]:
    """Alive nodes that offer a GPU (the head has none)."""
    import ray

    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) > 0]


class NodeTimeline:
    """Alive GPU worker nodes over time, polled from the driver every `interval_s`: (seconds since start,
    count), one entry per change (and the first)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.t0 = time.monotonic()
        self.points: list[tuple[float, int]] = []
        self.events: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def mark(self, event: str) -> None:
        """A named moment of the run, printed with the counts."""
        self.events.append((self.now(), event))

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                count = len(gpu_worker_nodes())
            except Exception:   # noqa: BLE001 - a GCS hiccup under load: try again next tick
                count = None
            if count is not None and (not self.points or self.points[-1][1] != count):
                self.points.append((self.now(), count))
            self._stop.wait(self.interval_s)

    def start(self) -> NodeTimeline:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def current(self) -> int:
        return self.points[-1][1] if self.points else 0

    def wait_for(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.points and self.current() == count:
                return True
            time.sleep(self.interval_s)
        return False

    def render(self) -> str:
        rows = sorted([(t, f"gpu_nodes={n}") for t, n in self.points] + self.events)
        return "\n".join(f"  t={t:7.1f}s  {what}" for t, what in rows)


def run_scenario(name: str, work: Path, overrides: dict[str, Any] | None = None,
                 timeout_s: float = 900.0) -> dict[str, Any]:
    """Runs `tests/cluster_scenarios.py NAME` in a process (and process group) of its own with a Ray folder of
    its own; whatever it leaves running, even on a timeout, is stopped by PID. Returns its JSON; its output
    ends the assertion message when it fails."""
    temp_dir = new_temp_dir()
    cmd = [sys.executable, str(HERE / "cluster_scenarios.py"), name, str(work)]
    cmd += [json.dumps(overrides)] if overrides else []
    proc = subprocess.Popen(cmd, cwd=HERE.parent, env=ray_env(temp_dir), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_processes(temp_dir, {proc.pid})
        output, _ = proc.communicate()
        output += f"\n(timed out after {timeout_s} s)"
    finally:
        left = stop_processes(temp_dir, {proc.pid})
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert proc.returncode == 0, output[-6000:]
    assert not left, f"processes left running by the scenario (stopped now): {left}"
    return json.loads(output.strip().splitlines()[-1])
