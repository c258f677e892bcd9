"""`dropedit simulate`: the run's graph on N logical GPUs with the synthetic model, in its own local Ray cluster
(a subprocess: the test session's cluster has no GPUs). Faults injected: an actor killed mid-edit and storage
writes failing at a rate; every (record, configuration) row must still be there exactly once."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _simulate(*args: str, timeout: int = 240) -> dict:
    cmd = [sys.executable, "-m", "jobs.simulate", "configs/demo.yaml", "--set", "models.0.name=flux-kontext",
           "--set", "resolutions=[1024]", "--set", "steps=28", *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert any("SYNTHETIC" in line for line in lines)   # it says what it is
    return json.loads(lines[-1])


def test_simulated_cluster_with_a_killed_actor_and_write_faults_loses_and_duplicates_nothing():
    out = _simulate("--gpus", "2", "--records", "10", "--configurations", "3", "--kill-actors", "1",
                    "--write-faults", "0.2", "--scale", "0.004")
    assert (out["gpus"], out["records"], out["configurations"], out["units"]) == (2, 10, 3, 10), out
    assert out["rows_lost"] == 0 and out["rows_duplicated"] == 0, out
    assert out["rows_ok"] == 30 and out["rows_error"] == 0, out   # 8 attempts per write absorb the faults
    assert out["actor_kills"] == 1 and out["model_loads"] == 2 + 1   # the killed actor came back, loaded again
    assert 0 < out["gpu_busy"] <= 1 and out["ideal_makespan_s"] <= out["makespan_s"]
    assert out["driver_peak_rss_mb"] > 0


def test_simulate_refuses_bad_options_before_ray_starts():
    done = subprocess.run([sys.executable, "-m", "jobs.simulate", "configs/demo.yaml", "--gpus", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--gpus and --records must be at least 1" in done.stderr
