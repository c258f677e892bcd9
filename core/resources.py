"""Where the project's shipped files are: the trained toy models (`models/`) and the configs, demo records and
ToPi calibrations (`configs/`), found the same way by every module.

Roots, first that has the file wins:
1. `$DROPEDIT_RESOURCES`, when set (a folder holding `models/` and `configs/`);
2. the source checkout this code runs from (an editable install, or the repository itself);
3. the data a non-editable install (`pip install .`, a wheel) put in `<prefix>/share/dropedit` (setup.py).
"""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

ENV = "DROPEDIT_RESOURCES"
SHARE = ("share", "dropedit")
TOP_FOLDERS = ("models", "configs")   # what setup.py ships as data files


def roots() -> list[Path]:
    """The folders searched, in order; only those that exist."""
    found: list[Path] = []
    if os.environ.get(ENV):
        found.append(Path(os.environ[ENV]).expanduser())
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        found.append(checkout)
    found.append(Path(sysconfig.get_path("data")).joinpath(*SHARE))
    return [r for r in found if r.is_dir()]


def resource(*parts: str) -> Path:
    """The shipped file or folder `parts` (e.g. `resource("models", "toy-flux-kontext-v2")`) under the first
    root that has it; under the first root when none has it (callers say what is missing)."""
    candidates = [root.joinpath(*parts) for root in roots()]
    for path in candidates:
        if path.exists():
            return path
    if candidates:
        return candidates[0]
    return Path(__file__).resolve().parents[1].joinpath(*parts)


def locate(path: str | os.PathLike) -> Path:
    """A path a user gave: as given when it exists (relative to the working folder), else the shipped file of
    that name when it names one (`configs/demo.yaml` from any folder), else as given."""
    given = Path(path).expanduser()
    if given.exists() or given.is_absolute() or not given.parts or given.parts[0] not in TOP_FOLDERS:
        return given
    shipped = resource(*given.parts)
    return shipped if shipped.exists() else given
