"""The int8 K/V store's effect on edits (issue 31): SpotEdit (its defaults, and focus) on the toy model over the
demo records, the K/V buffers in the compute dtype and in int8, same seed: PSNR of the int8 edit against the
compute-dtype one (the store's own error), and of each against the exact target (does the edit change).

    python -m bench.kv_int8_quality [--model toy-flux-kontext-v2] [--records 8] [--steps 28]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
import PIL.Image

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    err = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if err == 0 else 10 * np.log10(1.0 / err)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy-flux-kontext-v2")
    ap.add_argument("--records", type=int, default=8)
    ap.add_argument("--steps", type=int, default=28)
    args = ap.parse_args(argv)
    import torch

    import actors
    import policies

    torch.set_num_threads(1)
    pipe = actors.load_pipeline(args.model, device="cpu")
    lines = [json.loads(x) for x in (CONFIGS / "demo_manifest.jsonl").read_text().splitlines() if x.strip()]
    print(json.dumps({"model": args.model, "steps": args.steps, "machine": platform.processor() or platform.machine(),
                      "load_avg_1m": round(os.getloadavg()[0], 1)}))
    for name in ("spotedit", "focus"):
        for record in lines[: args.records]:
            image = PIL.Image.open(CONFIGS / record["image"]).convert("RGB")
            target = np.asarray(PIL.Image.open(CONFIGS / record["target"]).convert("RGB"), np.float64) / 255
            out = {}
            for store in ("compute", "int8"):
                r = actors.Editor(pipe, policies.make(name), kv_store=store).edit(
                    image, record["instruction"], seed=0, steps=args.steps)
                out[store] = (r.pixels, r.query_ratio_mean)
            print(json.dumps({"policy": name, "record": record["id"], "category": record.get("category"),
                              "query_ratio": round(out["compute"][1], 3),
                              "psnr_int8_vs_compute": round(psnr(out["int8"][0], out["compute"][0]), 2),
                              "psnr_compute_vs_target": round(psnr(out["compute"][0], target), 2),
                              "psnr_int8_vs_target": round(psnr(out["int8"][0], target), 2)}), flush=True)


if __name__ == "__main__":
    main()
