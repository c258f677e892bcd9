"""Ships the data folders (`models/`, `configs/`) with a non-editable install, under `<prefix>/share/dropedit`,
where `core.resources` finds them. Everything else is in pyproject.toml."""
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def data_files() -> list[tuple[str, list[str]]]:
    out = []
    for top in ("models", "configs"):
        for folder in sorted(p for p in [HERE / top, *(HERE / top).rglob("*")] if p.is_dir()):
            files = sorted(str(f.relative_to(HERE)) for f in folder.iterdir() if f.is_file())
            if files:
                out.append((str(Path("share", "dropedit", folder.relative_to(HERE))), files))
    return out


setup(data_files=data_files())
