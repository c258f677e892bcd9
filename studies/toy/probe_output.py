"""What every toy probe (`cfg_probe`, `order_probe`) writes: its inputs, its measures, the seconds it took and the
machine's 1-minute load before and after, as one JSON file."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable


def write_probe(out: str, inputs: dict[str, Any], measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `measure`, write `inputs` + its result + seconds + load to `out`; return the whole result."""
    load, started = os.getloadavg()[0], time.perf_counter()
    result = {**inputs, **measure(), "seconds": round(time.perf_counter() - started, 1),
              "load_avg_1m": [round(load, 1), round(os.getloadavg()[0], 1)]}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))
    return result
