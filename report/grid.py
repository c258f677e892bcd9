"""The labelled grid: one row per record, columns source | mask | target | one per configuration.

Every tile says what it is: column headers name the configuration, each row carries its instruction, each
output has its background PSNR and keep ratio under it. A file that cannot be read leaves a grey tile that
says why; the grid never stops the report. `masks.png` is the same layout with each configuration's keep
mask (green: source tokens computed, mean over steps) in place of its output."""
from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

TILE = 160                 # px per image; 128 px toy outputs are upscaled a little
PAD = 6
COL_W = TILE + 2 * PAD
LINE = 15                  # px per text line
TITLE_H = 3 * LINE + PAD   # the title: up to 3 lines, enough at 3 columns
HEADER_H = 3 * LINE + PAD  # column header: up to 3 wrapped lines
INSTR_H = 2 * LINE + PAD   # instruction above each row: up to 2 wrapped lines
CAPTION_H = 2 * LINE + PAD
ROW_H = INSTR_H + TILE + CAPTION_H
GREY, DARK = (200, 200, 200), (40, 40, 40)


def grid_size(n_cols: int, n_rows: int) -> tuple[int, int]:
    """Pixel size of a grid with `n_cols` columns (inputs + configurations) and `n_rows` records."""
    return n_cols * COL_W, TITLE_H + HEADER_H + n_rows * ROW_H


@dataclass
class Cell:
    """One tile: an image (or None) and up to two caption lines."""
    image: Image.Image | None
    caption: list[str]
    missing: str = "missing"


def font(size: int = 12, bold: bool = False) -> ImageFont.ImageFont:
    """DejaVu Sans from matplotlib (has –, ω, ×), else Pillow's default font."""
    try:
        from matplotlib import font_manager
        spec = font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal")
        return ImageFont.truetype(font_manager.findfont(spec, fallback_to_default=False), size)
    except Exception:   # noqa: BLE001 - any font is better than no grid
        return ImageFont.load_default(size=size)


def wrap(text: str, fnt: ImageFont.ImageFont, width: int, lines: int) -> list[str]:
    """Wrap `text` to `width` px in at most `lines` lines, the last cut with '…' when too long."""
    chars = max(4, int(width / max(fnt.getlength("n"), 1)))
    out = textwrap.wrap(" ".join(str(text).split()), chars) or [""]
    while any(fnt.getlength(line) > width for line in out) and chars > 4:   # narrow glyphs guessed wrong
        chars -= 2
        out = textwrap.wrap(" ".join(str(text).split()), chars) or [""]
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1][: max(0, chars - 1)].rstrip() + "…"
    return out


def fit(image: Image.Image | None, note: str = "missing") -> Image.Image:
    """A TILE x TILE tile: the image scaled to fit on grey, or grey with `note`."""
    tile = Image.new("RGB", (TILE, TILE), GREY)
    if image is None:
        draw, fnt = ImageDraw.Draw(tile), font(11)
        for i, line in enumerate(wrap(note, fnt, TILE - 2 * PAD, 8)):
            draw.text((PAD, TILE // 2 - 8 + i * LINE), line, fill=DARK, font=fnt)
        return tile
    image = image.convert("RGB")
    scale = min(TILE / image.width, TILE / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.NEAREST if scale >= 2 else Image.LANCZOS   # tiny toy images: show their pixels
    image = image.resize(size, resample)
    tile.paste(image, ((TILE - size[0]) // 2, (TILE - size[1]) // 2))
    return tile


def render(title: str, headers: list[str], rows: list[tuple[str, list[Cell]]]) -> Image.Image:
    """Draw the grid: title, column headers, then per row its text line and its tiles with captions."""
    width, height = grid_size(len(headers), len(rows))
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    big, small, bold = font(13), font(11), font(12, bold=True)
    for i, line in enumerate(wrap(title, big, width - 2 * PAD, 3)):
        draw.text((PAD, PAD // 2 + i * LINE), line, fill="black", font=big)
    for c, header in enumerate(headers):
        for i, line in enumerate(wrap(header, bold, COL_W - 2 * PAD, 3)):
            draw.text((c * COL_W + PAD, TITLE_H + i * LINE), line, fill="black", font=bold)
    for r, (text, cells) in enumerate(rows):
        top = TITLE_H + HEADER_H + r * ROW_H
        draw.line([(0, top), (width, top)], fill=GREY)
        for i, line in enumerate(wrap(text, big, width - 2 * PAD, 2)):
            draw.text((PAD, top + PAD // 2 + i * LINE), line, fill=(0, 0, 120), font=big)
        for c, cell in enumerate(cells):
            x = c * COL_W + PAD
            sheet.paste(fit(cell.image, cell.missing), (x, top + INSTR_H))
            draw.rectangle([x - 1, top + INSTR_H - 1, x + TILE, top + INSTR_H + TILE], outline=GREY)   # white tiles
            for i, line in enumerate(cell.caption[:2]):
                draw.text((x, top + INSTR_H + TILE + 2 + i * LINE), wrap(line, small, TILE, 1)[0],
                          fill=DARK, font=small)
    return sheet


def number(value: Any, fmt: str, unit: str = "") -> str:
    """A metric for a caption: '–' when missing, '∞' for identical images."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞" + unit
    return format(value, fmt) + unit


# ------------------------------------------------------------------ from result rows to cells

def input_uris(results: str, record_id: str) -> dict[str, str]:
    """Where the actor wrote this record's inputs: {output}/inputs/{name}.png, {name}_mask.png,
    {name}_target.png, `output` being the parent of the results folder."""
    from pipeline import storage as st

    base, name = st.join_uri(st.parent_uri(results), "inputs"), st.safe_name(record_id)
    return {"source": st.join_uri(base, f"{name}.png"), "mask": st.join_uri(base, f"{name}_mask.png"),
            "target": st.join_uri(base, f"{name}_target.png")}


def load(uri: str | None, storage: Any = None) -> tuple[Image.Image | None, str]:
    """(image, '') or (None, why not)."""
    from pipeline import storage as st
    from pipeline.images import image_from_bytes

    if not uri:
        return None, "missing (no file name)"
    try:
        return image_from_bytes(st.read_bytes(uri, storage), uri), ""
    except Exception as exc:   # noqa: BLE001 - a bad file is a grey tile, not a failed report
        try:
            found = st.exists(uri, storage)   # S3 and local say "not there" differently: ask
        except Exception:   # noqa: BLE001
            found = True
        return None, "missing" if not found else f"unreadable: {type(exc).__name__}"


def input_cells(inputs: dict[str, tuple[Image.Image | None, str]], with_target: bool) -> list[Cell]:
    """Source (with its size), ground-truth mask (with the edited share) and, when asked, target."""
    unknown = (None, "inputs not found")   # no file names at all (actors.edit_actor not importable)
    source, mask = inputs.get("source", unknown), inputs.get("mask", unknown)
    cells = [Cell(source[0], [f"{source[0].width}×{source[0].height} px" if source[0] else ""], source[1])]
    edited = f"edited: {np.mean(np.asarray(mask[0].convert('L')) > 127):.0%} of image" if mask[0] else ""
    cells.append(Cell(mask[0], [edited], "no mask" if mask[1] == "missing" else mask[1]))
    if with_target:
        target = inputs.get("target", unknown)
        cells.append(Cell(target[0], [""], "no target" if target[1] == "missing" else target[1]))
    return cells


def config_cell(rows: pd.DataFrame, kind: str, storage: Any = None) -> Cell:
    """The tile of one configuration on one record: its output (or keep mask) and its numbers."""
    if rows.empty:
        return Cell(None, [], "not run")
    ok = rows[rows["status"] == "ok"]
    if ok.empty:
        return Cell(None, ["edit failed"], f"error: {rows['error'].iloc[0]}")
    row = ok.iloc[0]
    uri = row["output_uri"] if isinstance(row["output_uri"], str) else ""
    image, why = load(uri.replace("/images/", "/masks/") if kind == "masks" else uri, storage)
    caption = [f"PSNR_bg {number(row.get('psnr_bg'), '.1f', ' dB')}",
               f"keep {number(row.get('keep_ratio_mean'), '.2f')}"]
    return Cell(image, caption, why)


TITLES = {
    "images": "One row per record (instruction in blue). Under each output: background PSNR vs the source "
              "(– = record has no mask) and keep = mean fraction of source tokens kept.",
    "masks": "Keep masks: green = source tokens computed (mean over steps) over the dimmed source; "
             "compare with the ground-truth mask (white = edited).",
}
FILES = {"images": "contact_sheet.png", "masks": "masks.png"}


def write_grids(df: pd.DataFrame, results: str, out: str, n_records: int = 4, storage: Any = None,
                label_col: str = "config_label") -> dict[str, str]:
    """contact_sheet.png (outputs) and masks.png (keep masks) for the first `n_records` edited records."""
    from .labels import config_order

    ok = df[df["status"] == "ok"]
    records = list(dict.fromkeys(ok["record_id"]))[:n_records]
    if not records:
        return {}
    order = config_order(df, label_col)
    inputs = {r: {k: load(u, storage) for k, u in input_uris(results, r).items()} for r in records}
    any_target = any(inputs[r].get("target", (None,))[0] is not None for r in records)
    paths = {}
    for kind, name in FILES.items():
        with_target = any_target and kind == "images"   # the keep masks compare with the mask, not the target
        headers = ["source", "ground-truth mask (white = edited)"] + (["target"] if with_target else []) + order
        rows = []
        for record in records:
            mine = df[df["record_id"] == record]
            cells = input_cells(inputs[record], with_target)
            cells += [config_cell(mine[mine[label_col] == label], kind, storage) for label in order]
            rows.append((f"{record}: {_instruction(mine)}", cells))
        paths[kind] = os.path.join(out, name)
        render(TITLES[kind], headers, rows).save(paths[kind])
    return paths


def _instruction(rows: pd.DataFrame) -> str:
    text = rows["instruction"].dropna()
    return str(text.iloc[0]) if len(text) else "(no instruction recorded)"
