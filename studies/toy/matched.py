"""The matched-budget random arms: one budget per record (the kept-token counts of that record's TokenDrop run,
step by step), run in-process with the same `Editor` and metric code as the grid."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from studies.toy.labels import blur_of, value_is
from studies.toy.models import DEFAULT_MODEL, PATCH
from studies.toy.scoring import manifest_index


def matched_arms(df: pd.DataFrame, data: Path, out: Path, steps: int, model: str = DEFAULT_MODEL,
                 model_path: str | Path | None = None) -> pd.DataFrame:
    """Random drop with each record's own TokenDrop(+reg) budget (per ω and blur kernel), with and without
    the regularizer, on `model` (loaded by name, from `model_path` when given)."""
    from PIL import Image

    import policies
    from actors import Editor, load_pipeline

    path = out / "matched.parquet"
    done = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    if not done.empty and "matched_blur" not in done:
        done["matched_blur"] = None
    td = df[(df.policy == "tokendrop") & df.reg & (df.status == "ok")]
    td_blur = td["blur"] if "blur" in td else pd.Series(None, index=td.index, dtype=object)

    def is_done(r: Any, blur: str | None, reg: bool) -> bool:
        return not done.empty and bool(((done.record_id == r.record_id) & (done.reg == reg)
                                        & (done.matched_omega == r.omega) & value_is(done.matched_blur, blur)).any())

    todo = [(r, blur_of(b), reg) for r, b in zip(td.itertuples(), td_blur) for reg in (False, True)
            if not is_done(r, blur_of(b), reg)]
    if not todo:
        return done
    index = manifest_index(data)
    pipe = load_pipeline(model, path=model_path, device="cpu")
    rows = [] if done.empty else done.to_dict("records")
    for i, (r, blur, reg) in enumerate(todo):
        rec = index[r.record_id]
        total = int(r.height // PATCH * r.width // PATCH)
        budget = [int(round(k * total)) for k in r.keep_ratio_per_step]
        policy = policies.make("random", budget=budget, reg=reg)
        with Image.open(data / rec["image"]) as src:
            result = Editor(pipe, policy).edit(src.convert("RGB"), rec["instruction"], seed=int(r.seed),
                                               steps=steps, height=int(r.height), width=int(r.width))
        edited_dir = out / "matched" / (f"omega{r.omega}" + (f"-{blur}" if blur else "")) / ("reg" if reg else "noreg")
        edited_dir.mkdir(parents=True, exist_ok=True)
        out_uri = str(edited_dir / f"{r.record_id}.png")
        result.image.save(out_uri)
        rows.append({"record_id": r.record_id, "model": r.model, "category": r.category, "policy": "random", "reg": reg,
                     "policy_params": json.dumps(policy.params(), sort_keys=True), "status": "ok",
                     "output_uri": out_uri, "keep_ratio_mean": result.keep_ratio_mean,
                     "runtime_s": result.seconds, "height": r.height, "width": r.width, "seed": r.seed,
                     "tokendrop_keep_ratio": r.keep_ratio_mean, "matched_omega": r.omega, "matched_blur": blur})
        print(f"[matched {i + 1}/{len(todo)}] {r.record_id} ω={r.omega} blur={blur} reg={reg} "
              f"keep {result.keep_ratio_mean:.2f}", file=sys.stderr, flush=True)
        pd.DataFrame(rows).to_parquet(path)
    return pd.DataFrame(rows)
