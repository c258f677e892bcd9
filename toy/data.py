"""Procedural image-editing data whose right answer is known exactly (pure numpy + PIL).

A record is a source image (a smooth background and 1–3 non-overlapping shapes), an instruction from a
template, the exact target image, the mask of the edited region and the edit's category. Everything is a
function of ``(seed, index)`` only, so record 7 of seed 0 is the same whether 10 or 10 000 are made, and a
worker can make its own shard without coordination.

The target must be a function of (source, instruction) alone, or a model could not learn it exactly:
added and moved objects go to the centre of a named cell of a 3x3 grid ("top left", ...), sizes are three
named classes, resizing steps one class up or down about the same centre, and a new background is one
named flat colour. Objects are named by colour and shape, unique within an image.

Backgrounds are smooth (gradients, low-frequency noise, wide stripes and checks) so that an 8x VAE with
16 latent channels can reconstruct them; high-frequency noise could not be, and every PSNR would then
measure the VAE rather than the edit.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "orange": (245, 140, 30), "purple": (140, 60, 190), "white": (245, 245, 245), "black": (20, 20, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
# Half-extent of each size class as a fraction of the image side (9, 14, 20 px at 128 px).
SIZES: dict[str, float] = {"small": 0.07, "medium": 0.11, "large": 0.155}
SIZE_ORDER: tuple[str, ...] = ("small", "medium", "large")
# 3x3 grid cells, named as an instruction says them: (row, column).
CELLS: dict[str, tuple[int, int]] = {
    "top left": (0, 0), "top": (0, 1), "top right": (0, 2),
    "left": (1, 0), "center": (1, 1), "right": (1, 2),
    "bottom left": (2, 0), "bottom": (2, 1), "bottom right": (2, 2),
}
BACKGROUNDS: tuple[str, ...] = ("flat", "linear", "radial", "clouds", "stripes", "checker")
LOCAL_EDITS: tuple[str, ...] = ("recolor", "remove", "add", "move", "resize")
GLOBAL_EDITS: tuple[str, ...] = ("grayscale", "invert", "background")
CATEGORIES: tuple[str, ...] = LOCAL_EDITS + GLOBAL_EDITS

TEMPLATES: dict[str, tuple[str, ...]] = {
    "recolor": ("make the {obj} {color}", "change the color of the {obj} to {color}", "turn the {obj} {color}",
                "paint the {obj} {color}"),
    "remove": ("remove the {obj}", "delete the {obj}", "erase the {obj}", "take away the {obj}"),
    "add": ("add a {size} {color} {shape} at the {cell}", "put a {size} {color} {shape} in the {cell}",
            "place a {size} {color} {shape} at the {cell}"),
    "move": ("move the {obj} to the {cell}", "put the {obj} at the {cell}", "shift the {obj} to the {cell}"),
    "resize": ("make the {obj} {direction}", "make the {obj} a bit {direction}"),
    "grayscale": ("make the image grayscale", "convert the image to black and white", "remove all color",
                  "make it grayscale"),
    "invert": ("invert the colors", "invert the image", "make it a negative"),
    "background": ("make the background {color}", "change the background to {color}",
                   "turn the background {color}", "paint the background {color}"),
}

SUPERSAMPLE = 4     # shapes are drawn 4x larger and box-filtered: anti-aliased, deterministic edges
MASK_DILATION = 2   # px around every changed pixel, so anti-aliased rims belong to the edit


@dataclass(frozen=True)
class Shape:
    shape: str
    color: str
    size: str
    cx: float   # centre, pixels
    cy: float

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def radius(self, side: int) -> float:
        return SIZES[self.size] * side


@dataclass(frozen=True)
class ToyRecord:
    id: str
    category: str
    instruction: str
    source: np.ndarray    # H x W x 3 uint8
    target: np.ndarray    # H x W x 3 uint8, the exact answer
    mask: np.ndarray      # H x W bool, True = edited


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


# ------------------------------------------------------------------ drawing

def _random_rgb(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(40, 215, 3)


def background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """H x W x 3 float image in [0, 255] of one smooth background kind."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    c0, c1 = _random_rgb(rng), _random_rgb(rng)
    if kind == "flat":
        return np.broadcast_to(c0, (size, size, 3)).copy()
    if kind == "linear":
        angle = rng.uniform(0, 2 * np.pi)
        u = np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)
        w = (u - u.min()) / (u.max() - u.min())
    elif kind == "radial":
        cx, cy = rng.uniform(0.2, 0.8, 2)
        r = np.hypot(xx - cx, yy - cy)
        w = r / r.max()
    elif kind == "clouds":
        # value noise on a coarse grid, bicubically upsampled: structure the VAE can represent
        cells = int(rng.integers(3, 6))
        coarse = rng.uniform(0, 255, (cells, cells)).astype(np.uint8)
        w = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.float64) / 255.0
    elif kind in ("stripes", "checker"):
        period = size / int(rng.integers(2, 5))       # half periods of 16-32 px at 128 px
        phase = rng.uniform(0, period)
        soft = lambda v: 0.5 + 0.5 * np.tanh(4 * np.sin(2 * np.pi * (v * (size - 1) + phase) / period))  # noqa: E731
        if kind == "stripes":
            w = soft(xx) if rng.random() < 0.5 else soft(yy)
        else:
            a, b = soft(xx), soft(yy)
            w = a * b + (1 - a) * (1 - b)
    else:
        raise ValueError(f"unknown background {kind!r}; accepted: {', '.join(BACKGROUNDS)}")
    return c0 * (1 - w[..., None]) + c1 * w[..., None]


def _polygon(shape: Shape, side: int, scale: int) -> list[tuple[float, float]] | None:
    r, cx, cy = shape.radius(side) * scale, shape.cx * scale, shape.cy * scale
    if shape.shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape.shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape.shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    return None


def coverage(shape: Shape, side: int) -> np.ndarray:
    """Fraction of each pixel the shape covers (H x W float in [0, 1]), by 4x supersampling."""
    big = Image.new("L", (side * SUPERSAMPLE, side * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(big)
    poly = _polygon(shape, side, SUPERSAMPLE)
    if poly is None:
        r, cx, cy = (v * SUPERSAMPLE for v in (shape.radius(side), shape.cx, shape.cy))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(poly, fill=255)
    return np.asarray(big.resize((side, side), Image.BOX), np.float64) / 255.0


def compose(base: np.ndarray, shapes: list[Shape]) -> np.ndarray:
    """Shapes alpha-blended over a float background; uint8 result."""
    img = base.copy()
    side = base.shape[0]
    for s in shapes:
        a = coverage(s, side)[..., None]
        img = img * (1 - a) + np.asarray(COLORS[s.color], np.float64) * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def footprint(shapes: list[Shape], side: int) -> np.ndarray:
    out = np.zeros((side, side), bool)
    for s in shapes:
        out |= coverage(s, side) > 0
    return out


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Square dilation by `px` pixels (numpy only)."""
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-px, px + 1):
        for dx in range(-px, px + 1):
            shifted = np.zeros_like(mask)
            shifted[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
                mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
            out |= shifted
    return out


# ------------------------------------------------------------------ scene layout

def cell_center(cell: str, side: int) -> tuple[float, float]:
    row, col = CELLS[cell]
    return (2 * col + 1) * side / 6, (2 * row + 1) * side / 6


def _overlaps(a: Shape, b: Shape, side: int, gap: float = 3.0) -> bool:
    # squares and diamonds reach sqrt(2)·r from the centre along their corners
    reach = lambda s: s.radius(side) * (1.42 if s.shape in ("square", "diamond") else 1.0)  # noqa: E731
    return np.hypot(a.cx - b.cx, a.cy - b.cy) < reach(a) + reach(b) + gap


def _inside(s: Shape, side: int) -> bool:
    r = s.radius(side) + 1
    return r <= s.cx <= side - 1 - r and r <= s.cy <= side - 1 - r


def _fits(s: Shape, others: list[Shape], side: int) -> bool:
    return _inside(s, side) and not any(_overlaps(s, o, side) for o in others)


def _new_shape(rng: np.random.Generator, side: int, taken: list[Shape], *, exclude_names: set[str],
               at: tuple[float, float] | None = None, size: str | None = None) -> Shape | None:
    for _ in range(50):
        shape, color = str(rng.choice(SHAPES)), str(rng.choice(list(COLORS)))
        if f"{color} {shape}" in exclude_names:
            continue
        sz = size or str(rng.choice(SIZE_ORDER))
        r = SIZES[sz] * side + 1
        cx, cy = at if at is not None else rng.uniform(r, side - 1 - r, 2)
        s = Shape(shape, color, sz, float(cx), float(cy))
        if _fits(s, taken, side):
            return s
    return None


def scene(rng: np.random.Generator, side: int, count: int) -> tuple[str, np.ndarray, list[Shape]]:
    kind = str(rng.choice(BACKGROUNDS))
    base = background(kind, side, rng)
    shapes: list[Shape] = []
    for _ in range(count):
        s = _new_shape(rng, side, shapes, exclude_names={o.name for o in shapes})
        if s is not None:
            shapes.append(s)
    return kind, base, shapes


# ------------------------------------------------------------------ edits

def _free_cells(shapes: list[Shape], side: int, moving: Shape | None = None, size: str | None = None) -> list[str]:
    free = []
    for cell in CELLS:
        cx, cy = cell_center(cell, side)
        probe = Shape(moving.shape if moving else "square", "red", size or (moving.size if moving else "large"), cx, cy)
        others = [s for s in shapes if s is not moving]
        if _fits(probe, others, side) and (moving is None or np.hypot(cx - moving.cx, cy - moving.cy) > 1):
            free.append(cell)
    return free


def _local_edit(category: str, rng: np.random.Generator, side: int, base: np.ndarray,
                shapes: list[Shape]) -> tuple[str, list[Shape]] | None:
    """(instruction, shapes after the edit), or None if this scene does not allow the edit."""
    tpl = str(rng.choice(TEMPLATES[category]))
    if category == "add":
        size = str(rng.choice(SIZE_ORDER))
        cells = _free_cells(shapes, side, size=size)
        if not cells:
            return None
        cell = str(rng.choice(cells))
        new = _new_shape(rng, side, shapes, exclude_names={s.name for s in shapes},
                         at=cell_center(cell, side), size=size)
        if new is None:
            return None
        return tpl.format(size=size, color=new.color, shape=new.shape, cell=cell), shapes + [new]
    if not shapes:
        return None
    target = shapes[int(rng.integers(len(shapes)))]
    rest = [s for s in shapes if s is not target]
    if category == "remove":
        return tpl.format(obj=target.name), rest
    if category == "recolor":
        taken = {s.name for s in shapes}
        colors = [c for c in COLORS if c != target.color and f"{c} {target.shape}" not in taken]
        color = str(rng.choice(colors))
        new = Shape(target.shape, color, target.size, target.cx, target.cy)
        return tpl.format(obj=target.name, color=color), [new if s is target else s for s in shapes]
    if category == "move":
        cells = _free_cells(shapes, side, moving=target)
        if not cells:
            return None
        cell = str(rng.choice(cells))
        cx, cy = cell_center(cell, side)
        new = Shape(target.shape, target.color, target.size, cx, cy)
        return tpl.format(obj=target.name, cell=cell), rest + [new]
    if category == "resize":
        i = SIZE_ORDER.index(target.size)
        options = [d for d, j in (("smaller", i - 1), ("bigger", i + 1)) if 0 <= j < len(SIZE_ORDER)]
        rng.shuffle(options)
        for direction in options:
            j = i - 1 if direction == "smaller" else i + 1
            new = Shape(target.shape, target.color, SIZE_ORDER[j], target.cx, target.cy)
            if _fits(new, rest, side):
                return tpl.format(obj=target.name, direction=direction), rest + [new]
        return None
    raise ValueError(category)


def _global_edit(category: str, rng: np.random.Generator, source: np.ndarray,
                 shapes: list[Shape]) -> tuple[str, np.ndarray]:
    tpl = str(rng.choice(TEMPLATES[category]))
    if category == "grayscale":
        # ITU-R 601 luma, as PIL's convert("L")
        y = source.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return tpl, np.repeat(np.clip(np.rint(y), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if category == "invert":
        return tpl, 255 - source
    if category == "background":
        color = str(rng.choice(list(COLORS)))
        base = np.broadcast_to(np.asarray(COLORS[color], np.float64), source.shape).copy()
        return tpl.format(color=color), compose(base, shapes)
    raise ValueError(category)


def make_record(seed: int, index: int, size: int = 128, category: str | None = None) -> ToyRecord:
    """Record `index` of data set `seed`; the category cycles through CATEGORIES unless given."""
    category = category or CATEGORIES[index % len(CATEGORIES)]
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; accepted: {', '.join(CATEGORIES)}")
    rng = _rng(seed, index)
    for _ in range(100):   # redraw the scene until it admits the edit (e.g. a free cell to add into)
        _, base, shapes = scene(rng, size, int(rng.integers(1, 4)))
        source = compose(base, shapes)
        if category in GLOBAL_EDITS:
            instruction, target = _global_edit(category, rng, source, shapes)
        else:
            edit = _local_edit(category, rng, size, base, shapes)
            if edit is None:
                continue
            instruction, after = edit
            target = compose(base, after)
        changed = np.any(source != target, axis=2)
        if not changed.any():
            continue   # e.g. inverting mid-grey, recolouring to an identical colour: not an edit
        mask = np.ones_like(changed) if category in ("grayscale", "invert") else dilate(changed, MASK_DILATION)
        return ToyRecord(id=f"toy-{seed}-{index:06d}", category=category, instruction=instruction,
                         source=source, target=target, mask=mask)
    raise RuntimeError(f"no valid {category} edit found for seed {seed}, index {index}")


def iter_records(seed: int, start: int, stop: int, size: int = 128) -> Iterator[ToyRecord]:
    for i in range(start, stop):
        yield make_record(seed, i, size)


# ------------------------------------------------------------------ manifest

def write_dataset(out: str | os.PathLike, n: int, seed: int, size: int = 128) -> Path:
    """Write `n` records as PNGs plus `manifest.jsonl` (id, image, instruction, mask, category, target)."""
    out = Path(out)
    for sub in ("source", "target", "mask"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    tmp = manifest.with_suffix(".jsonl.tmp")
    with tmp.open("w") as f:
        for rec in iter_records(seed, 0, n, size):
            Image.fromarray(rec.source).save(out / "source" / f"{rec.id}.png")
            Image.fromarray(rec.target).save(out / "target" / f"{rec.id}.png")
            Image.fromarray(rec.mask.astype(np.uint8) * 255).save(out / "mask" / f"{rec.id}.png")
            f.write(json.dumps({"id": rec.id, "image": f"source/{rec.id}.png", "instruction": rec.instruction,
                                "mask": f"mask/{rec.id}.png", "category": rec.category,
                                "target": f"target/{rec.id}.png"}) + "\n")
    tmp.replace(manifest)   # the manifest appears only once every file it names is written
    return manifest


def vocabulary() -> list[str]:
    """Every word the templates can produce (for tokenizers that should see them as single tokens)."""
    words: list[str] = []
    fills = [*COLORS, *SHAPES, *SIZES, *(w for c in CELLS for w in c.split()), "smaller", "bigger"]
    for text in [t for ts in TEMPLATES.values() for t in ts] + fills:
        for w in re.sub(r"\{\w+\}", " ", text).split():
            if w not in words:
                words.append(w)
    return words
