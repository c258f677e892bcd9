"""`dropedit report RESULTS [--out DIR]`: the paper-style table, plots and a contact sheet from the Parquet."""
from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np
import pandas as pd

GROUP = ["model", "policy", "policy_params", "height", "width"]
METRICS = ["psnr_bg", "ssim_bg", "mse_bg", "lpips_bg", "psnr_vs_full", "ssim_vs_full", "lpips_vs_full"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="results folder (local or s3://), e.g. results/results")
    p.add_argument("--out", default="report", help="local folder for the report")
    p.add_argument("--sheet-records", type=int, default=4, help="records on the contact sheet")


def load_results(results: str, storage: Any = None) -> pd.DataFrame:
    from pipeline.resume import latest_rows, read_results

    table = read_results(results, storage)
    if table is None:
        raise ValueError(f"no Parquet results under {results!r}")
    return latest_rows(table).to_pandas()


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per model x policy x size: runtime, speedup vs full, keep ratio, background and fidelity metrics.

    The speedup compares medians of the denoising loop's time (`loop_s`): whole-edit runtimes also hold
    encoding, decoding and, for an actor's first edit, its warm-up. Results written before `loop_s`
    existed fall back to `runtime_s`.
    """
    ok = df[df["status"] == "ok"].copy()
    if "loop_s" not in ok or ok["loop_s"].isna().all():
        ok["loop_s"] = ok["runtime_s"]
    agg = ok.groupby(GROUP, dropna=False).agg(
        edits=("record_id", "count"), runtime_s=("runtime_s", "mean"), loop_s=("loop_s", "median"),
        keep_ratio=("keep_ratio_mean", "mean"), **{m: (m, "mean") for m in METRICS}).reset_index()
    errors = df[df["status"] != "ok"].groupby(GROUP, dropna=False).size().rename("errors")
    agg = agg.merge(errors.reset_index(), on=GROUP, how="left").fillna({"errors": 0})
    full = agg[agg["policy"] == "full"].set_index(["model", "height", "width"])["loop_s"]
    agg["speedup_vs_full"] = [
        full.get((m, h, w), np.nan) / r if r else np.nan
        for m, h, w, r in zip(agg["model"], agg["height"], agg["width"], agg["loop_s"])]
    cols = GROUP + ["edits", "errors", "runtime_s", "loop_s", "speedup_vs_full", "keep_ratio"] + METRICS
    return agg[cols].sort_values(GROUP).reset_index(drop=True)


def _plots(df: pd.DataFrame, table: pd.DataFrame, out: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, part in table.groupby("policy"):
        ax.scatter(part["speedup_vs_full"], part["psnr_bg"], label=policy)
    ax.set_xlabel("speedup vs full (same run)")
    ax.set_ylabel("background PSNR (dB)")
    ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(out, "speedup_vs_psnr_bg.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ok = df[df["status"] == "ok"]
    for (policy, params), part in ok.groupby(["policy", "policy_params"]):
        steps = np.array([np.asarray(v, float) for v in part["keep_ratio_per_step"]], dtype=object)
        length = min(len(s) for s in steps)
        ax.plot(np.mean([s[:length] for s in steps], axis=0), label=f"{policy} {params}")
    ax.set_xlabel("step")
    ax.set_ylabel("kept source tokens (fraction)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(out, "keep_ratio_per_step.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def contact_sheet(df: pd.DataFrame, out: str, n_records: int, storage: Any = None) -> str | None:
    """Rows of records; columns: full output, then each policy's output and its keep mask."""
    from PIL import Image

    from pipeline import storage as st
    from pipeline.images import image_from_bytes

    ok = df[df["status"] == "ok"].sort_values(["policy", "policy_params"])
    records = list(dict.fromkeys(ok["record_id"]))[:n_records]
    if not records:
        return None
    configs = list(dict.fromkeys(zip(ok["config_id"], ok["policy"])))
    configs.sort(key=lambda c: c[1] != "full")
    tile = 128
    sheet = Image.new("RGB", (tile * 2 * len(configs), tile * len(records)), "white")
    for r, record in enumerate(records):
        for c, (config_id, _) in enumerate(configs):
            row = ok[(ok["record_id"] == record) & (ok["config_id"] == config_id)]
            if row.empty:
                continue
            uri = row["output_uri"].iloc[0]
            for k, u in enumerate((uri, uri.replace("/images/", "/masks/"))):
                try:
                    im = image_from_bytes(st.read_bytes(u, storage), u)
                except Exception:   # noqa: BLE001 - a missing tile stays blank
                    continue
                sheet.paste(im.resize((tile, tile)), ((2 * c + k) * tile, r * tile))
    path = os.path.join(out, "contact_sheet.png")
    sheet.save(path)
    return path


def write_report(results: str, out: str, storage: Any = None, sheet_records: int = 4) -> dict[str, str]:
    os.makedirs(out, exist_ok=True)
    df = load_results(results, storage)
    table = summary_table(df)
    md = os.path.join(out, "summary.md")
    with open(md, "w") as f:
        f.write(table.to_markdown(index=False, floatfmt=".4g") + "\n")
    table.to_csv(os.path.join(out, "summary.csv"), index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    files = {"markdown": md, "csv": os.path.join(out, "summary.csv")}
    for p in _plots(df, table, out):
        files[os.path.basename(p)] = p
    sheet = contact_sheet(df, out, sheet_records, storage)
    if sheet:
        files["contact_sheet"] = sheet
    return files


def run(args: argparse.Namespace) -> int:
    write_report(args.results, args.out, sheet_records=args.sheet_records)
    return 0
