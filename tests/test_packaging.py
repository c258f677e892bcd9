"""Every folder of Python code is a package that pyproject's package discovery ships, so a non-editable
install carries all of it."""
import pathlib
import tomllib

from setuptools import find_packages

ROOT = pathlib.Path(__file__).resolve().parents[1]
SKIP = {".venv", "build", ".git", "tests", "docs", "configs", "models", "results"}


def test_every_code_folder_is_a_discovered_package():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = set(find_packages(str(ROOT), include=find["include"], exclude=find["exclude"]))
    code_folders = set()
    for py in ROOT.rglob("*.py"):
        rel = py.parent.relative_to(ROOT)
        if rel.parts and rel.parts[0] not in SKIP and not rel.parts[0].startswith("."):
            code_folders.add(".".join(rel.parts))
    assert code_folders == shipped, (sorted(code_folders - shipped), sorted(shipped - code_folders))
    assert "tests" not in shipped and "actors.families.flux_kontext" in shipped
