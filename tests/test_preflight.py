"""A run config is refused before Ray or any model starts: bad policy parameters, sizes a model was not
trained at, and relative outputs under `ray job submit`."""
import json
import subprocess
import sys

import pytest

from jobs import preflight
from pipeline.config import expand_run, parse_config


def _run(**extra):
    raw = {"input": "configs/demo_manifest.jsonl", "output": "results", "models": [{"name": "toy-flux-kontext"}],
           "policies": [{"name": "full"}], "resolutions": [128], "steps": 2}
    raw.update(extra)
    return expand_run(parse_config(raw))


def test_good_config_passes():
    preflight.check_run(_run(policies=[{"name": "tokendrop", "omega": [0.0, 0.4]}]))


def test_policy_parameter_out_of_range_names_the_configuration():
    with pytest.raises(ValueError, match=r"tokendrop omega=5.*omega.*\[-1.0, 1.0\]"):
        preflight.check_run(_run(policies=[{"name": "tokendrop", "omega": 5}]))


def test_size_outside_the_models_training_is_refused():
    with pytest.raises(ValueError, match="trained at 128x128 only"):
        preflight.check_run(_run(resolutions=[256]))
    preflight.check_sizes(_run(models=[{"name": "tiny-flux-kontext"}], resolutions=[256]).configurations)   # any size


def test_relative_output_is_refused_inside_a_ray_job(monkeypatch):
    run = _run()
    preflight.check_run(run)   # on a laptop: relative to where the user is
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"working_dir": "."}}))
    with pytest.raises(ValueError, match="temporary copy of the working directory"):
        preflight.check_run(run)
    preflight.check_output("/abs/results")
    preflight.check_output("s3://bucket/results")


def test_dropedit_run_refuses_before_ray_starts(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("input: configs/demo_manifest.jsonl\noutput: %s\nmodels: [{name: toy-flux-kontext}]\n"
                      "policies: [{name: tokendrop, omega: 5}]\nresolutions: [128]\n" % (tmp_path / "out"))
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", str(config)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "omega" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr and not (tmp_path / "out").exists()
