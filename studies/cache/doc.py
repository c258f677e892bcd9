"""The cache study's outputs from its per-record rows (OUT/rows.jsonl, `studies.cache.run`): one aggregated row per
configuration, the table (Markdown + CSV), the Pareto plot, the verdicts (`studies.cache.pareto`), docs/cache-study.md
and README.md's section between the `<!-- cache-study:begin -->` / `<!-- cache-study:end -->` markers.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from studies.cache import grid as study
from studies.cache import pareto as cp
from studies.cache.compare import psnr_of

Row = dict[str, Any]
# the plot's columns and the verdicts' speed axes; measured: the CPU-time ratio, whose null (`full` against itself)
# stays near 1 on the loaded machine while the wall-time ratio's does not (the doc prints both nulls)
SPEEDS = ("flop_speedup", "flop_1024", "cpu_speedup")
BEGIN, END = "<!-- cache-study:begin -->", "<!-- cache-study:end -->"
STYLE = {"full": ("black", "*"), "cache": ("tab:blue", "o"), "pruning": ("tab:orange", "s"),
         "cache+pruning": ("tab:green", "^"), "peer": ("tab:red", "D")}
SHORT = {"tokendrop": "TD", "random": "Rnd", "topi": "ToPi", "spotedit": "Spot", "first-block": "FB",
         "magcache": "Mag", "taylorseer": "TS", "regione": "RegionE"}


def _mean_psnr(mses: Iterable[float | None]) -> float:
    """PSNR of the mean squared error over the records that have one (an identical edit: zero error); NaN if none."""
    v = [m for m in mses if m is not None]
    return psnr_of(float(np.mean(v))) if v else math.nan


def aggregate(lines: Sequence[Row], model: str, steps: int, order: Sequence[str] = ()) -> list[Row]:
    """One row per configuration (the grid's order first, then any other found), means over its records; a peer
    that cannot run here gets a row with its `reason` and no numbers."""
    groups: dict[str, list[Row]] = {}
    for line in lines:
        if line.get("model") == model and line.get("steps") == steps:
            groups.setdefault(line["config"], []).append(line)
    configs = list(order) + [c for c in groups if c not in order]
    out = []
    for config in configs:
        if config in groups:
            out.append(_row(config, groups[config]))
        elif (reason := study.unavailable(config)) is not None:
            out.append({"config": config, "family": study.family(config), "reason": reason, "records": 0})
    return out


def _row(config: str, lines: list[Row]) -> Row:
    measured = [x["measured_speedup"] for x in lines]
    bg = [x["mse_bg"] for x in lines if x.get("mse_bg") is not None]
    return {"config": config, "family": study.family(config), "records": len(lines),
            "skipped": float(np.mean([x["skipped"] for x in lines])),
            "keep": float(np.mean([x["keep"] for x in lines])),
            "query": float(np.mean([x.get("query", 1.0) for x in lines])),
            "psnr_full": _mean_psnr(x["mse_full"] for x in lines),
            "psnr_target": _mean_psnr(x["mse_target"] for x in lines),
            "psnr_bg": _mean_psnr(bg), "bg_records": len(bg),
            "flop_speedup": float(np.mean([x["flop_speedup"] for x in lines])),
            "flop_1024": float(np.mean([x.get("flop_1024", math.nan) for x in lines])),
            "roofline_1024": float(np.mean([x.get("roofline_1024", math.nan) for x in lines])),
            **_spread("measured", measured), **_spread("cpu", [x.get("cpu_speedup", math.nan) for x in lines]),
            "seconds": float(np.mean([x["seconds"] for x in lines]))}


def _spread(name: str, values: list[float]) -> dict[str, float]:
    """Median and quartiles over the records: `NAME_speedup`, `NAME_p25`, `NAME_p75`."""
    return {f"{name}_speedup": float(np.median(values)), f"{name}_p25": float(np.percentile(values, 25)),
            f"{name}_p75": float(np.percentile(values, 75))}


def short(config: str) -> str:
    """A plot label: `tokendrop[omega=0]|first-block:threshold=0.12` -> `TD 0+FB 0.12`."""
    what, _, cache = config.partition("|")
    if what.startswith("peer:"):
        name, _, params = what[5:].partition("[")
        return SHORT.get(name, name) + ("+TS" if "taylorseer=true" in params else "")
    out = []
    for text in (what, cache):
        name = re.split(r"[\[:]", text)[0]
        if not text or name == "full":
            continue
        values = re.findall(r"=([^;\]]+)", text)
        out.append(SHORT.get(name, name) + (f" {values[0]}" if values else ""))
    return "+".join(out) or "full"


def _cell(config: str) -> str:
    """A configuration in a Markdown table cell (its `|` escaped, or it splits the cell)."""
    return "`" + config.replace("|", "\\|") + "`"


def _x(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:.2f}×"


def _db(v: float) -> str:
    return "—" if math.isnan(v) else ("identical" if v == math.inf else f"{v:.1f}")


def table(rows: Sequence[Row], steps: int) -> str:
    lines = [f"| configuration (policy\\|cache) | family | skipped calls of {steps} | source kept | noisy queries | "
             "PSNR vs full (dB) | PSNR vs target (dB) | background PSNR (dB) | FLOP-ideal, Kontext-dev | "
             "FLOP-ideal, Kontext-dev 1024² (projected) | roofline H100, Kontext-dev 1024² (projected; — : rows "
             "measured before it) | measured, wall: median (p25–p75) | measured, CPU time: median (p25–p75) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("reason"):
            lines.append(f"| {_cell(r['config'])} | {r['family']} | unavailable: {r['reason']} |||||||||||")
            continue
        lines.append(f"| {_cell(r['config'])} | {r['family']} | {r['skipped']:.1f} | {r['keep']:.2f} | {r['query']:.2f} | "
                     f"{_db(r['psnr_full'])} | {_db(r['psnr_target'])} | {_db(r['psnr_bg'])} | "
                     f"{r['flop_speedup']:.2f}× | {r['flop_1024']:.2f}× | {_x(r.get('roofline_1024', math.nan))} | "
                     f"{r['measured_speedup']:.2f}× "
                     f"({r['measured_p25']:.2f}–{r['measured_p75']:.2f}) | {r['cpu_speedup']:.2f}× "
                     f"({r['cpu_p25']:.2f}–{r['cpu_p75']:.2f}) |")
    return "\n".join(lines)


def write_csv(rows: Sequence[Row], path: Path) -> None:
    import pandas as pd

    pd.DataFrame(list(rows)).to_csv(path, index=False)


def plot(rows: Sequence[Row], path: Path) -> None:
    """2×3: quality (vs target, vs full) against speed (FLOP-ideal at the toy's tokens and projected to 1024²,
    measured); frontier dashed; labelled points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = cp.measured(rows)
    fig, axes = plt.subplots(2, 3, figsize=(21, 12))
    for i, quality in enumerate(("psnr_target", "psnr_full")):
        for j, speed in enumerate(SPEEDS):
            _panel(axes[i][j], rows, speed, quality)
    handles = [plt.Line2D([], [], color=c, marker=m, ls="", label=f) for f, (c, m) in STYLE.items()]
    handles.append(plt.Line2D([], [], color="grey", ls="--", label="Pareto frontier"))
    fig.legend(handles=handles, loc="upper center", ncol=6)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panel(ax: Any, rows: Sequence[Row], speed: str, quality: str) -> None:
    finite = [r[quality] for r in rows if math.isfinite(r[quality])]
    cap = max(finite) + 3 if finite else 1.0   # an identical edit (inf dB) is drawn above every finite one

    def y(r: Row) -> float:
        return cap if r[quality] == math.inf else r[quality]

    for r in rows:
        colour, marker = STYLE[r["family"]]
        ax.scatter(r[speed], y(r), c=colour, marker=marker, s=60 if marker == "*" else 30, zorder=3)
        ax.annotate(short(r["config"]), (r[speed], y(r)), fontsize=6, xytext=(3, 2), textcoords="offset points")
    front = cp.pareto_frontier(rows, speed, quality)
    ax.plot([r[speed] for r in front], [y(r) for r in front], ls="--", c="grey", drawstyle="steps-post", zorder=2)
    ax.axvline(2.5, c="lightgrey", lw=0.8, zorder=1)
    ax.set(xlabel=f"{cp.SPEED_NAMES[speed]} speedup (×)",
           ylabel=f"{cp.QUALITY_NAMES[quality]} (dB; top = identical)" if quality == "psnr_full"
           else f"{cp.QUALITY_NAMES[quality]} (dB)")
    ax.grid(alpha=0.3)


def verdicts(rows: Sequence[Row], brief: bool = False) -> list[str]:
    """The verdicts, computed; `brief`: the FLOP-ideal ones and cache-dit at both speeds (the README's)."""
    parts = {r["config"]: study.parts(r["config"]) for r in rows if study.parts(r["config"])}
    speeds = SPEEDS[:2] if brief else SPEEDS
    out = [cp.composition_text(rows, s, q) for s in speeds for q in ("psnr_target", "psnr_full")]
    out += [cp.composes_text(rows, parts, s, "psnr_target") for s in speeds]
    out += [cp.peer_text(rows, s, "psnr_full") for s in ("flop_speedup", "cpu_speedup")]
    return out


def _machine(lines: Sequence[Row]) -> str:
    threads = sorted({int(x.get("threads", 1)) for x in lines}) or [1]
    load = [x["load1"] for x in lines if x.get("load1") is not None]
    seen = f"{min(load):.0f}–{max(load):.0f}" if load else "not recorded"
    return (f"{'/'.join(map(str, threads))} torch thread(s) per edit on a 2-core CPU shared with other engineers' "
            f"measurements (loaded: the 1-minute load average was {seen} while the grid ran), so the measured "
            "speedups are indicative only; the p25–p75 range shows the spread over the records")


def doc(rows: Sequence[Row], lines: Sequence[Row], model: str, steps: int) -> str:
    from actors.models import shipped_folders
    from actors.model_defaults import read_defaults

    n = max((r["records"] for r in rows), default=0)
    seconds = sum(x["seconds"] + x["reference_seconds"] for x in lines)
    size = read_defaults(shipped_folders().get(model)).default_size or ("any", "any")
    return f"""# Cache study: temporal caches, token pruning, their compositions and the peers (issue 19)

Generated by `python -m studies.cache.run` (resumable; `--no-run` regenerates this page from
[cache-study/rows.jsonl](cache-study/rows.jsonl)): {model}, the {n} demo records of `configs/demo_manifest.jsonl`,
{steps} steps, {size[1]}x{size[0]}, seed 0. The API, the correctness rule under pruning and the FLOP model are in
[caches.md](caches.md); the edits run through `studies.cache.compare.run_config`.

- **Quality**: PSNR vs the uncached `full` edit (fidelity: what the acceleration changed), vs the exact target (the
  toy's right answer), and of the background (PIE-Bench: the mask-zeroed images vs the source; records whose mask
  covers the whole image have none: {_bg_note(rows)}). Each is the PSNR of the mean squared error over the records
  (an identical edit counts as zero error; "identical" = every record bit-identical to `full`).
- **Skipped calls**: transformer calls a cache served, in part or whole, of {steps} (Flux Kontext: one call per step);
  source kept / noisy queries: shares of source tokens entering and of noisy tokens computed (SpotEdit), means.
- **FLOP-ideal**: the toy's traces priced on FLUX.1-Kontext-dev's config (57 blocks, 512 text tokens), mean over
  records. At the toy's 64 + 64 image tokens the text dominates, so source pruning alone buys little there; the
  **1024² (projected)** column prices the same plans (the same shares of source tokens kept, noisy queries computed,
  calls and blocks skipped, per step) with 4096 + 4096 image tokens, as on the real model at 1024²: a projection of
  what the toy's decisions would cost there, not a measurement of the real model's decisions.
- **Measured**: each of our edits paired with an uncached `full` edit of the same record, run back to back with it
  (before it on every other record, after it on the rest, so that an order effect cancels in the median; a peer:
  with the pipeline's own `__call__` without it, run before it), whole edit; the ratio of wall times and of process
  CPU times (the CPU time grows far less than the wall time when other work takes the cores); median and p25–p75
  over the records; `full|` against itself is the null: {_null(rows)}. {_machine(lines)}. The plot's and the
  verdicts' "measured" is the CPU-time ratio. Edit time in all: {seconds / 60:.0f} min.

## Table

CSV: [cache-study/table.csv](cache-study/table.csv).

{table(rows, steps)}

## Pareto plot

![quality vs speedup](cache-study/pareto.png)

One colour and marker per family (full, cache alone, pruning alone, cache+pruning, peer); the dashed line is the
Pareto frontier (no other configuration at least as fast and as good); the grey vertical line is 2.5×. Labels:
TD = TokenDrop ω, Rnd = random drop ratio, ToPi τ, Spot = SpotEdit τ; FB = first-block threshold, Mag = MagCache
threshold, TS = TaylorSeer interval.

## Verdicts (computed from the table)

"The best single method at that speed" = the best of the single methods (a cache alone, a pruning policy alone, or a
peer) that reach at least {1 - cp.TOLERANCE:.0%} of the composition's speed, or of the fastest single method's where
the composition is faster than all of them (extra speed bought with quality does not count as a win); "best case" is
the composition with the largest margin, and the fastest single method on the singles' frontier just below that
speed is named where it is better. The comparisons are with the settings measured (no interpolation). A
composition "composes" when it is faster than both its parts (the policy alone, the cache alone, same settings)
and neither part is at least as fast and as good; "quality vs the worse part" is its quality minus the lower of
its parts'.

{chr(10).join(verdicts(rows))}
"""


def _null(rows: Sequence[Row]) -> str:
    r = next((r for r in rows if r["config"] == "full|" and not r.get("reason")), None)
    if r is None:
        return "not measured"
    return (f"wall {r['measured_speedup']:.2f}× ({r['measured_p25']:.2f}–{r['measured_p75']:.2f}), CPU time "
            f"{r['cpu_speedup']:.2f}× ({r['cpu_p25']:.2f}–{r['cpu_p75']:.2f})")


def compact_table(rows: Sequence[Row]) -> str:
    """The README's table: quality, FLOP-ideal and measured (CPU time) speedups."""
    lines = ["| configuration (policy\\|cache) | PSNR vs full | PSNR vs target | bg PSNR | FLOP-ideal Kontext-dev "
             "(toy tokens / 1024² proj.) | measured, CPU: median (p25–p75) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("reason"):
            lines.append(f"| {_cell(r['config'])} | unavailable: {r['reason']} |||||")
            continue
        lines.append(f"| {_cell(r['config'])} | {_db(r['psnr_full'])} | {_db(r['psnr_target'])} | {_db(r['psnr_bg'])} | "
                     f"{r['flop_speedup']:.2f}× / {r['flop_1024']:.2f}× | {r['cpu_speedup']:.2f}× "
                     f"({r['cpu_p25']:.2f}–{r['cpu_p75']:.2f}) |")
    return "\n".join(lines)


def _bg_note(rows: Sequence[Row]) -> str:
    counts = sorted({r["bg_records"] for r in rows if not r.get("reason")})
    return f"{'/'.join(map(str, counts))} record(s) have one"


def readme_section(rows: Sequence[Row], steps: int) -> str:
    return f"""## Temporal caches and peers

Temporal caches (first-block, MagCache, TaylorSeer) compose with every pruning policy (`Editor.edit(cache=...)`,
`dropedit edit --cache ...`; API and correctness under pruning: [docs/caches.md](docs/caches.md)); cache-dit runs
as a peer, RegionE where CUDA exists. The study (`python -m studies.cache.run`, resumable; table, Pareto plot and
method: [docs/cache-study.md](docs/cache-study.md)) on the toy model, {steps} steps, the 5 demo records (PSNR in dB;
FLOP-ideal on FLUX.1-Kontext-dev at the toy's token counts and projected to 1024²; measured = process CPU time
paired with `full` on the same record, 1 thread, on a loaded shared 2-core CPU: indicative only):

{compact_table(rows)}

Verdicts, computed from the table:

{chr(10).join(verdicts(rows, brief=True))}
"""


def replace_section(text: str, section: str) -> str | None:
    """README text with the part between the markers replaced; None when the markers are not there."""
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        return None
    return text[:i + len(BEGIN)] + "\n" + section.rstrip() + "\n" + text[j:]


def write(out: Path, model: str, steps: int, readme: Path | None = None) -> list[Row]:
    """Every output from OUT/rows.jsonl; returns the aggregated rows."""
    lines = study.read_rows(out / "rows.jsonl")
    rows = aggregate(lines, model, steps, study.grid())
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table(rows, steps) + "\n")
    write_csv(rows, out / "table.csv")
    plot(rows, out / "pareto.png")
    (out.parent / f"{out.name}.md").write_text(doc(rows, lines, model, steps))
    if readme is not None and readme.exists():
        new = replace_section(readme.read_text(), readme_section(rows, steps))
        if new is None:
            print(f"{readme}: no {BEGIN} marker, section not written")
        else:
            readme.write_text(new)
    return rows
