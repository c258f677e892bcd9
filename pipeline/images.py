"""Loading source images and edit masks for one record.

Masks are boolean ``H x W`` arrays, ``True`` = edited region (white in a PNG,
1 in a PIE-Bench run list).  Every failure is raised as ``RecordError`` with a
reason that names the URI, so the job writes an error row instead of crashing.
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline import storage as st
from pipeline.records import EditRecord, RecordError, validate_record

PIE_MASK_SHAPE = (512, 512)


def image_from_bytes(data: bytes, what: str) -> Image.Image:
    """Decode encoded image bytes into an RGB PIL image."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # force decoding now, so truncated files fail here
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RecordError(f"unreadable image {what}: {exc}") from None
    return img.convert("RGB")


def _read(uri: str, storage: st.StorageLike, kind: str) -> bytes:
    try:
        return st.read_bytes(uri, storage)
    except FileNotFoundError:
        raise RecordError(f"{kind} not found: {uri}") from None
    except IsADirectoryError:
        raise RecordError(f"{kind} is a directory, not a file: {uri}") from None
    except (OSError, ValueError) as exc:
        raise RecordError(f"cannot read {kind} {uri}: {exc}") from None


def load_image(uri: str, storage: st.StorageLike = None) -> Image.Image:
    """Read an image (local or s3://) as RGB; ``RecordError`` if missing or unreadable."""
    return image_from_bytes(_read(uri, storage, "image"), uri)


def mask_from_image(img: Image.Image) -> np.ndarray:
    """White (>= 128 in luminance; alpha ignored) = edited region."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA").convert("RGB")
    return np.asarray(img.convert("L")) >= 128


def load_mask(uri: str, size: tuple[int, int], storage: st.StorageLike = None) -> np.ndarray:
    """Bool ``H x W`` mask from a PNG; ``size`` is the image's PIL ``(width, height)``."""
    data = _read(uri, storage, "mask")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise RecordError(f"unreadable mask {uri}: {exc}") from None
    if img.size != tuple(size):
        raise RecordError(
            f"mask size {img.size[0]}x{img.size[1]} does not match image size "
            f"{size[0]}x{size[1]} (mask {uri})"
        )
    return mask_from_image(img)


def decode_pie_mask(rle: Sequence[int], shape: tuple[int, int] = PIE_MASK_SHAPE) -> np.ndarray:
    """Decode a PIE-Bench run list exactly as its evaluation code does.

    ``rle`` is ``[start, length, start, length, ...]`` over the row-major image; runs
    are clipped at the end of the image; the one-pixel border is then set to 1
    ("to avoid annotation errors in boundary", PnPInversion evaluation/evaluate.py).
    """
    if len(rle) % 2:
        raise RecordError(f"PIE-Bench mask run list has odd length {len(rle)}")
    h, w = int(shape[0]), int(shape[1])
    total = h * w
    flat = np.zeros(total + 1, dtype=np.int32)  # difference array: +1 at start, -1 at end
    runs = np.asarray(rle, dtype=np.int64).reshape(-1, 2)
    for start, length in runs:
        if start < 0 or length < 0:
            raise RecordError(f"PIE-Bench mask run list has a negative entry ({start}, {length})")
        end = min(start + length, total)
        if start < end:
            flat[start] += 1
            flat[end] -= 1
    mask = (np.cumsum(flat[:total]) > 0).reshape(h, w)
    mask[0, :] = mask[-1, :] = True
    mask[:, 0] = mask[:, -1] = True
    return mask


def mask_to_png_bytes(mask: np.ndarray) -> bytes:
    """Encode a bool mask as an 8-bit PNG (white = edited), e.g. to write PIE masks out."""
    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def record_image(record: EditRecord | Mapping[str, Any], storage: st.StorageLike = None) -> Image.Image:
    """The record's source image, from embedded bytes or from its URI."""
    rec = record if isinstance(record, EditRecord) else _as_record(record)
    if rec.image_bytes:
        return image_from_bytes(rec.image_bytes, f"embedded in record {rec.id}")
    assert rec.image is not None  # validate_record guarantees one of the two
    return load_image(rec.image, storage)


def record_mask(
    record: EditRecord | Mapping[str, Any],
    size: tuple[int, int],
    storage: st.StorageLike = None,
) -> np.ndarray | None:
    """The record's edit mask at image ``size`` (PIL ``(w, h)``), or None if it has none."""
    rec = record if isinstance(record, EditRecord) else _as_record(record)
    if rec.mask_rle is not None:
        mask = decode_pie_mask(rec.mask_rle, rec.mask_shape or PIE_MASK_SHAPE)
        if (mask.shape[1], mask.shape[0]) != tuple(size):
            raise RecordError(
                f"mask size {mask.shape[1]}x{mask.shape[0]} does not match image size "
                f"{size[0]}x{size[1]} (run-length mask of record {rec.id})"
            )
        return mask
    if rec.mask:
        return load_mask(rec.mask, size, storage)
    return None


def _as_record(rec: Mapping[str, Any]) -> EditRecord:
    return validate_record(rec)
