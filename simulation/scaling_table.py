"""`python -m simulation.scaling_table docs/scaling`: the `dropedit simulate` results in a folder (one JSON line per
`*.json`, written by docs/scaling/run.sh) as the Markdown table README's "Scaling" section shows."""
from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ("actor", "gpus", "gpus_per_actor", "records", "configurations", "resolution", "units", "pairing", "scale", "gpu_busy",
           "gpu_busy_after_load", "makespan_s", "ideal_makespan_s", "makespan / ideal", "after load / ideal", "extra_gpu_s_for_pairing", "model_loads", "actor_kills",
           "node_kills", "write_fault_rate", "rows_ok", "rows_lost", "rows_duplicated", "driver_peak_rss_mb",
           "wall_s", "load_avg_1m")


def row(name: str, result: dict) -> list[str]:
    values = {**result, "resolution": name.split("_")[-1] if name.split("_")[-1].isdigit() else
              next((p for p in name.split("_") if p.isdigit()), "")}
    # runs made before the light actor do not record their edit times (their actor imported torch)
    values["actor"] = "light" if "edit_s" in result else "earlier (torch)"
    values["makespan / ideal"] = f"{result['makespan_s'] / result['ideal_makespan_s']:.3f}"
    # the window after the model load (60 s in runs that predate the `load_s` key)
    window = result["makespan_s"] - result.get("load_s", 60.0)
    values["gpu_busy_after_load"] = f"{result['ideal_makespan_s'] / window:.4f}"
    values["after load / ideal"] = f"{window / result['ideal_makespan_s']:.3f}"
    values.setdefault("gpus_per_actor", 1)
    values["pairing"] = result.get("pairing", "rerun") if (result.get("split_parts") or 1) > 1 else "no split"
    values["scale"] = f"{result['scale']:.3g}" if "scale" in result else ""
    if isinstance(values.get("load_avg_1m"), list):   # the machine's load when the run started and ended
        values["load_avg_1m"] = " → ".join(f"{v:g}" for v in values["load_avg_1m"])
    return [str(values.get(c, "")) for c in COLUMNS]


def table(folder: Path) -> str:
    lines = ["| run | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    results = {p.stem: json.loads(p.read_text().strip().splitlines()[-1]) for p in folder.glob("*.json")}
    for name in sorted(results, key=lambda n: (n.split("_")[0], results[n]["gpus"], n)):   # kind, then size
        lines.append(f"| {name} | " + " | ".join(row(name, results[name])) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/scaling")))
