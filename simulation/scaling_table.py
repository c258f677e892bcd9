"""`python -m simulation.scaling_table docs/scaling`: the `dropedit simulate` results in a folder (one JSON line per
`*.json`, written by docs/scaling/run.sh) as the Markdown table README's "Scaling" section shows."""
from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ("gpus", "records", "configurations", "resolution", "gpu_busy", "makespan_s", "ideal_makespan_s",
           "makespan / ideal", "model_loads", "actor_kills", "write_fault_rate", "rows_ok", "rows_lost",
           "rows_duplicated", "driver_peak_rss_mb", "wall_s")


def row(name: str, result: dict) -> list[str]:
    values = {**result, "resolution": name.split("_")[-1] if name.split("_")[-1].isdigit() else
              next((p for p in name.split("_") if p.isdigit()), "")}
    values["makespan / ideal"] = f"{result['makespan_s'] / result['ideal_makespan_s']:.3f}"
    return [str(values.get(c, "")) for c in COLUMNS]


def table(folder: Path) -> str:
    lines = ["| run | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text().strip().splitlines()[-1])
        lines.append(f"| {path.stem} | " + " | ".join(row(path.stem, result)) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/scaling")))
