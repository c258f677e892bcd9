"""The study's plots: background PSNR against the drop ratio, the adaptive keep ratio against the edited area."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from studies.toy.labels import td_rows, tokendrop_variants, variant_name


def plots(df: pd.DataFrame, out: Path) -> dict[str, str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    variants = tokendrop_variants(df)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, metric in zip(axes, ("psnr_bg", "psnr_edit")):
        for reg, style in ((False, "o-"), (True, "s--")):
            part = df[(df.policy == "random") & (df.reg == reg) & df.budget_free]
            g = part.groupby("ratio")[metric].mean()
            ax.plot(g.index, g.values, style, label=f"random, {'with' if reg else 'no'} reg")
        full = df[df.policy == "full"][metric].mean()
        ax.axhline(full, color="k", lw=1, label="full")
        for i, (omega, blur) in enumerate(variants):
            for reg, marker in ((True, "*"), (False, "P")):
                part = td_rows(df, omega, blur, reg)
                ax.plot(1 - part.keep_ratio_mean.mean(), part[metric].mean(), marker, ms=12, color=f"C{i + 2}",
                        label=f"TokenDrop {variant_name(omega, blur)}, {'with' if reg else 'no'} reg (mean drop)")
        ax.set(xlabel="drop ratio (mean over steps)", ylabel="dB",
               title={"psnr_bg": "background PSNR vs source", "psnr_edit": "PSNR inside mask vs target"}[metric])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    paths["ratio"] = str(out / "drop_ratio.png")
    fig.savefig(paths["ratio"], dpi=110)
    plt.close(fig)

    omegas = sorted({w for w, _ in variants})
    blurs = list(dict.fromkeys(b for _, b in variants))
    fig, axes = plt.subplots(max(1, len(blurs)), max(1, len(omegas)), figsize=(5.5 * max(1, len(omegas)),
                             4 * max(1, len(blurs))), squeeze=False)
    for (omega, blur) in variants:
        ax = axes[blurs.index(blur)][omegas.index(omega)]
        td = td_rows(df, omega, blur)
        for cat, part in td.groupby("category"):
            ax.scatter(part.mask_fraction, part.keep_ratio_mean, s=18, label=cat)
        x, y = td.mask_fraction.to_numpy(float), td.keep_ratio_mean.to_numpy(float)
        if len(x) > 1 and np.ptp(x) > 0:
            a, b = np.polyfit(x, y, 1)
            xs = np.linspace(x.min(), x.max(), 10)
            ax.plot(xs, a * xs + b, "r-", lw=1.5, label="least squares")
        ax.set(xlabel="edited area (mask fraction)", ylabel="mean keep ratio",
               title=f"TokenDrop ({variant_name(omega, blur)}, reg): keep ratio vs edit area")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    paths["area"] = str(out / "keep_vs_area.png")
    fig.savefig(paths["area"], dpi=110)
    plt.close(fig)
    return paths
