"""What both families' processors share."""
from __future__ import annotations

import torch


def key_rows(table: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """Rows of a per-token position table for the keys of a call; None = every row, in order."""
    return table if rows is None else table.index_select(0, rows.to(table.device))
