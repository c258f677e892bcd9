"""A labelled picture grid of representative toy edits (`docs/toy-results/edits.png`), drawn with PIL.

Rows: one held-out record per category (its category and instruction on the left); columns: the source, the
exact target, the `full` edit, then one representative configuration of every method (its label on top).
`grid_image` draws any such grid from image files; `study_grid` picks the records and configurations from the
study's scored rows.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

PAD = 6
LABEL_WIDTH = 170      # the left column with each row's label
FONT_SIZE = 13
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MISSING = (200, 200, 200)

# (column title, the label of the configuration it shows, in order of preference: the first that ran)
METHODS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("random drop 0.50", ("random 0.50, no reg",)),
    ("TokenDrop ω=0.4, paper kernel, reg", ("TokenDrop ω=0.4, paper kernel, with reg", "TokenDrop ω=0.4, with reg")),
    ("TokenDrop ω=0.4, grid kernel, reg", ("TokenDrop ω=0.4, grid kernel, with reg",)),
    ("ToPi τ=0.85", ("ToPi τ=0.85, prune", "ToPi τ=0.5, prune")),
    ("SpotEdit τ=0.2", ("SpotEdit τ=0.2, spotfusion", "SpotEdit τ=0.5, spotfusion")),
)
# Sparse Context: (model entry, label) of its representative: the copy fine-tuned with random drop, random keep
SPARSE = (("toy-ft-drop", "random, keep 0.25"), ("toy", "random, keep 0.25"))


def font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans (matplotlib ships it; it has ω, τ, σ), else PIL's own default font."""
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size)


def _wrap(text: str, draw: ImageDraw.ImageDraw, fnt: Any, width: int) -> list[str]:
    """Lines of `text` that fit `width` pixels (word wrap; a single long word is cut by characters)."""
    lines: list[str] = []
    for para in text.split("\n"):
        words, line = para.split(), ""
        for word in words:
            trial = f"{line} {word}".strip()
            if draw.textlength(trial, font=fnt) <= width or not line:
                line = trial
            else:
                lines.append(line)
                line = word
            while draw.textlength(line, font=fnt) > width and len(line) > 1:   # one word wider than the cell
                cut = max(1, len(line) - 1)
                while cut > 1 and draw.textlength(line[:cut], font=fnt) > width:
                    cut -= 1
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines


def _cell(path: str | Path | None, cell: int) -> Image.Image | None:
    if path is None or not Path(path).is_file():
        return None
    with Image.open(path) as im:
        return im.convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS if im.width > cell else
                                        Image.Resampling.NEAREST)


def grid_image(rows: Sequence[tuple[str, Sequence[str | Path | None]]], columns: Sequence[str], out: str | Path,
               cell: int = 160) -> dict[str, Any]:
    """Draw a grid: `columns` are the titles on top, each row is (its label, one image path per column; None
    or a missing file is drawn as a grey cell marked "–"). Returns the path, the size and what was drawn."""
    if not rows or not columns:
        raise ValueError("a picture grid needs at least one row and one column")
    for label, cells in rows:
        if len(cells) != len(columns):
            raise ValueError(f"row {label!r} has {len(cells)} images for {len(columns)} columns")
    fnt = font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = int(fnt.getbbox("Ag")[3]) + 3 if hasattr(fnt, "getbbox") else FONT_SIZE + 3
    titles = [_wrap(c, probe, fnt, cell - 2) for c in columns]
    labels = [_wrap(lab, probe, fnt, LABEL_WIDTH - 2 * PAD) for lab, _ in rows]
    header = PAD + max(len(t) for t in titles) * line_h + PAD
    row_h = max([cell] + [len(lines) * line_h for lines in labels]) + PAD
    width = LABEL_WIDTH + len(columns) * (cell + PAD) + PAD
    height = header + len(rows) * row_h + PAD
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for j, lines in enumerate(titles):
        x = LABEL_WIDTH + j * (cell + PAD)
        for k, line in enumerate(lines):
            draw.text((x, PAD + k * line_h), line, fill=INK, font=fnt)
    missing = 0
    for i, ((_, cells), lines) in enumerate(zip(rows, labels)):
        y = header + i * row_h
        for k, line in enumerate(lines):
            draw.text((PAD, y + k * line_h), line, fill=INK, font=fnt)
        for j, path in enumerate(cells):
            x = LABEL_WIDTH + j * (cell + PAD)
            img = _cell(path, cell)
            if img is None:
                missing += 1
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=MISSING)
                draw.text((x + cell // 2 - 4, y + cell // 2 - line_h // 2), "–", fill=INK, font=fnt)
            else:
                canvas.paste(img, (x, y))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return {"path": str(out), "size": [width, height], "columns": list(columns), "rows": [r for r, _ in rows],
            "cell": cell, "header": header, "label_width": LABEL_WIDTH, "row_height": row_h, "missing": missing}


# ------------------------------------------------------------------ the study's grid

def representatives(df: pd.DataFrame, sparse: pd.DataFrame | None = None) -> list[tuple[str, str, str]]:
    """(column title, model entry, label) of every method's representative configuration that ran: the first
    label of each method's preference list present among the ok rows."""
    ok = df[df.status == "ok"]
    labels = set(ok.label)
    model = ok[ok.policy == "full"].model.iloc[0] if (ok.policy == "full").any() else None
    chosen = [("full", model, "full")] if model is not None else []
    for title, prefs in METHODS:
        hit = next((lab for lab in prefs if lab in labels), None)
        if hit is not None:
            chosen.append((title, ok[ok.label == hit].model.iloc[0], hit))
    if sparse is not None and not sparse.empty:
        have = set(zip(sparse[sparse.status == "ok"].model, sparse[sparse.status == "ok"].label))
        hit = next((pair for pair in SPARSE if pair in have), None)
        if hit is not None:
            chosen.append((f"Sparse Context {hit[1]} ({hit[0]})", *hit))
    return chosen


def _manifest(data: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return {r["id"]: r for r in rows}


def study_grid(df: pd.DataFrame, data: str | Path, out: str | Path, sparse: pd.DataFrame | None = None,
               cell: int | None = None) -> dict[str, Any]:
    """The study's picture grid: per category the first held-out record (by id) every chosen configuration
    edited; columns source, target, then `representatives`."""
    data = Path(data)
    index = _manifest(data)
    frames = [df] + ([sparse] if sparse is not None and not sparse.empty else [])
    rows_all = pd.concat([f[["model", "label", "record_id", "status", "output_uri"]] for f in frames],
                         ignore_index=True)
    ok = rows_all[rows_all.status == "ok"]
    uri = {(m, lab, r): u for m, lab, r, u in zip(ok.model, ok.label, ok.record_id, ok.output_uri)}
    chosen = representatives(df, sparse)
    rows = []
    for category in dict.fromkeys(r["category"] for r in index.values()):   # the manifest's order
        ids = sorted(rid for rid, r in index.items() if r["category"] == category)
        complete = [rid for rid in ids if all((m, lab, rid) in uri for _, m, lab in chosen)]
        rid = (complete or [rid for rid in ids if any((m, lab, rid) in uri for _, m, lab in chosen)] or [None])[0]
        if rid is None:
            continue
        rec = index[rid]
        cells = [data / rec["image"], data / rec["target"]] + [uri.get((m, lab, rid)) for _, m, lab in chosen]
        rows.append((f"{category}\n“{rec['instruction']}”", cells))
    if not rows:
        raise ValueError("no edited record to show")
    if cell is None:
        with Image.open(rows[0][1][0]) as im:
            cell = min(im.width, 192)
    return grid_image(rows, ["source", "target (exact)"] + [title for title, _, _ in chosen], out, cell=cell)
