"""ToPi's calibration for a toy model, made (through `pipeline.calibration_run`) when there is none."""
from __future__ import annotations

from pathlib import Path

from core.resources import resource
from studies.toy.models import PROTOCOL_STEPS, ToyModel

CALIBRATIONS = resource("configs", "calibration")   # shipped ToPi calibrations, one per model: <name>.json


# ToPi calibration set (as v1's shipped file was made): 16 records of toy.data seed 7, the top 2 of 6 layers
CALIBRATION_SEED, CALIBRATION_RECORDS, CALIBRATION_TOP_M = 7, 16, 2


def ensure_calibration(model: ToyModel, out: Path, steps: int, path: str | Path | None = None) -> Path:
    """ToPi's calibration file for `model` (made by `pipeline.calibration_run` as v1's was: 16 records of toy.data
    seed 7 at the model's size, full context, the top 2 layers), made when missing: the shipped
    `configs/calibration/<name>.json` when there is one; else written there at the protocol's 28 steps, or
    under `out` at other step counts (a quick check does not ship a calibration). `path` overrides."""
    from policies.calibration import read_calibration
    from toy.data import write_dataset

    shipped = CALIBRATIONS / f"{model.name}.json"
    if path is None:
        path = shipped if shipped.exists() or steps == PROTOCOL_STEPS else out / "calibration" / f"{model.name}.json"
    path = Path(path)
    if path.exists():
        doc = read_calibration(path)
        if doc.get("model") not in (None, model.name):
            raise ValueError(f"{path} is the calibration of {doc.get('model')!r}, not of {model.name!r}")
        return path
    data = out / "calibration" / "data"
    if not (data / "manifest.jsonl").exists():
        write_dataset(data, CALIBRATION_RECORDS, seed=CALIBRATION_SEED, size=model.size)
    from pipeline.calibration_run import calibrate

    path.parent.mkdir(parents=True, exist_ok=True)
    calibrate(model.name, str(data / "manifest.jsonl"), str(path), top_m=CALIBRATION_TOP_M, steps=steps,
              height=model.size, width=model.size)
    return path
