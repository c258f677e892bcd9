"""A non-editable install (`pip install .`) into a fresh virtual environment, run from another folder, finds
the shipped models and configs through `core.resources`: the demo's dry run and a toy edit both work.

The fresh environment sees this one's dependencies through a .pth file (installing torch again would take
minutes and gigabytes); the project itself is installed there from a wheel, and this checkout is not on its
path, so the test fails if any module still finds its files relative to the source tree.
"""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # built from a copy: setuptools' build/ folder in the checkout could hold files of an older layout
    source = tmp_path_factory.mktemp("source") / "dropedit"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "results", "__pycache__",
                                                                "*.egg-info", ".pytest_cache"))
    # --ignore-installed: never uninstall the project from the environment running the tests
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--ignore-installed", "--prefix", str(venv), str(source)],
                   check=True, cwd=tmp_path_factory.mktemp("build"))
    assert importlib.metadata.distribution("dropedit")   # still installed where the tests run
    return python


def _run(python: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DROPEDIT_RESOURCES")}
    return subprocess.run([str(python), "-m", "jobs.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_installed_copy_is_not_the_checkout(fresh_python, tmp_path):
    out = subprocess.run([str(fresh_python), "-c", "import core.resources as r, actors; "
                          "print(actors.__file__); print(r.resource('models'))"],
                         cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert not out[0].startswith(str(ROOT)), out
    assert out[1].endswith("share/dropedit/models") and not out[1].startswith(str(ROOT)), out
    site = Path(out[0]).parents[1]
    assert not (site / "models").exists() and not (site / "configs").exists()   # data, not top-level packages


def test_demo_dry_run_from_another_folder(fresh_python, tmp_path):
    done = _run(fresh_python, ["run", "configs/demo.yaml", "--dry-run"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "toy-flux-kontext-v4" in done.stdout


def test_toy_edit_from_another_folder(fresh_python, tmp_path):
    image = ROOT / "configs" / "demo_images" / "toy-1-000041.png"
    done = _run(fresh_python, ["edit", "--model", "toy-flux-kontext-v4", "--image", str(image), "--instruction",
                               "erase the black square", "--steps", "2", "--out", "edited.png"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "edited.png").is_file()
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["model"] == "toy-flux-kontext-v4" and line["steps"] == 2
