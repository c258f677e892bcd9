"""The study's Pareto plot: FLOP-ideal speedup at 1024² (FLUX.1-Kontext-dev, projected) against PSNR vs `full`,
local and global edits side by side, one colour per kind of method."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from studies.cache.pareto import pareto_frontier

from .verdicts import FIDELITY, SPEED

STYLE = {"full": ("black", "*"), "cache": ("tab:blue", "o"), "seed": ("tab:orange", "s"),
         "composition": ("tab:green", "^"), "peer": ("tab:red", "D"), "regione": ("tab:purple", "P"),
         "focus": ("tab:cyan", "X")}
CEILING = 60.0   # identical edits are drawn at this PSNR


def pareto_plot(groups: dict[str, Sequence[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(7 * len(groups), 5.5), squeeze=False)
    for ax, (name, rows) in zip(axes[0], groups.items()):
        for kind, (colour, marker) in STYLE.items():
            pts = [r for r in rows if r["kind"] == kind]
            ax.scatter([r[SPEED] for r in pts], [min(r[FIDELITY], CEILING) for r in pts], c=colour, marker=marker,
                       label=kind, s=60 if kind == "focus" else 30)
        front = pareto_frontier(rows, SPEED, FIDELITY)
        ax.plot([r[SPEED] for r in front], [min(r[FIDELITY], CEILING) for r in front], "k--", lw=0.8)
        ax.axvline(4.0, color="grey", lw=0.6)
        ax.set_xscale("log")
        ax.set_xlabel("FLOP-ideal speedup, FLUX.1-Kontext-dev 1024² (projected from the toy's plans)")
        ax.set_ylabel(f"PSNR vs full (dB; identical drawn at {CEILING:g})")
        ax.set_title(f"{name} edits")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

