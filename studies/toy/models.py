"""The toy models a study runs on: the registered name, the image side it was trained at, its token grid; the
sampling protocol and where each model's study works."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "toy-flux-kontext-v2"


PROTOCOL_STEPS = 28                                 # Kontext's sampling steps: the study's and the calibration's


PATCH = 16                                          # pixels per token side: Flux's 8x VAE and 2x2 patches


@dataclass(frozen=True)
class ToyModel:
    """The toy model a study runs on: its registered name and the image side it was trained at."""

    name: str
    size: int

    @property
    def grid(self) -> int:
        return self.size // PATCH

    @property
    def tokens(self) -> int:
        """Tokens per image (source or noisy)."""
        return self.grid * self.grid

    @property
    def card(self) -> str:
        return f"models/{self.name}/MODEL_CARD.md"


def toy_model(name: str = DEFAULT_MODEL, size: int | None = None) -> ToyModel:
    """`name` with its trained size: `size` when given, else the first of the sizes its folder's
    `dropedit.json` lists (`actors.model_defaults`)."""
    from actors.model_defaults import read_defaults
    from actors.models import shipped_folders

    shipped = shipped_folders()
    if name not in shipped:
        raise ValueError(f"{name!r} is not a shipped toy model; accepted: {', '.join(shipped)}")
    if size is None:
        folder = shipped[name]
        if not (folder / "model_index.json").is_file():
            raise ValueError(f"model {name!r} is not in {folder} yet (train it first: python -m jobs.train ...)")
        trained = read_defaults(folder).default_size
        if trained is None:
            raise ValueError(f"{folder / 'dropedit.json'} names no trained size: pass --size")
        if trained[0] != trained[1]:
            raise ValueError(f"{name!r} was trained at {trained[1]}x{trained[0]}; the study is square only")
        size = trained[0]
    if size < PATCH or size % PATCH:
        raise ValueError(f"size must be a multiple of {PATCH}, got {size}")
    return ToyModel(name, int(size))


def default_out(name: str) -> str:
    """The working folder of a model's study: v1 keeps results/toy, every other model its own."""
    return "results/toy" if name == "toy-flux-kontext" else f"results/{name.replace('toy-flux-kontext-', 'toy-')}"


def portable(path: Path) -> str:
    """`path` relative to the working directory when under it (rows and config ids stay the same when the
    checkout moves), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
