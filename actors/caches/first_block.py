"""First-block cache (ParaAttention's FirstBlockCache, as diffusers' `FirstBlockCacheConfig` runs it).

Every call runs the first transformer block. Its residual on the image stream (output − input) is compared
with the residual of the last call that ran every block: when the relative L1 change
mean|r − r_prev| / mean|r_prev| is below `threshold`, the remaining blocks are skipped and the image stream
leaves the first block plus the remaining blocks' residual remembered from that last full call.

Under token pruning (decided here, and tested in tests/test_caches.py): the residuals are compared and reused on
the call's *noisy* rows only, per noisy grid position (actors.caches.runtime). diffusers' own hooks compare the
whole image stream, [noisy, kept source]: a kept set that changes size fails on shape, one that changes
membership compares different tokens, and ToPi's routing makes the last block's stream shorter than the first's.
Measured on the noisy rows, the decision sees exactly what pruning did to the tokens whose velocity the step
uses (their first-block residual already attends to the new source set), and the reused remainder residual is
the one those same tokens had. Source rows of a skipped call leave as the first block returned them; their
output is discarded anyway. Forced calls (attention statistics, SpotEdit's full steps) always run every block.

`threshold` 0 never skips (the comparison is strict): the edit equals the policy alone bit for bit.
`warmup` steps at the start always compute; `max_skips` caps consecutive skipped calls per branch (None: no cap,
as diffusers).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from pydantic import Field
from typing_extensions import Annotated

from .runtime import BlockHook, BranchState, CacheRun, CacheRunInfo, all_valid, scatter_rows, with_rows
from .spec import CacheSpec, Count, NonNegative


class FirstBlock(CacheSpec, name="first-block"):
    threshold: NonNegative = 0.08     # ParaAttention's FLUX suggestion (diffusers' default: 0.05)
    warmup: Count = 1                 # steps always computed at the start (>= 1: the first call fills the cache)
    max_skips: Annotated[Count, Field(ge=1)] | None = None

    @property
    def never_skips(self) -> bool:
        return self.threshold == 0

    def start(self, run: CacheRunInfo) -> "FirstBlockRun":
        return FirstBlockRun(self, run)


class FirstBlockState(BranchState):
    def __init__(self) -> None:
        super().__init__()
        self.head_residual: torch.Tensor | None = None   # [B, num_noisy, C] first block's residual, last full call
        self.tail_residual: torch.Tensor | None = None   # [B, num_noisy, C] the other blocks' residual, same call
        self.head_valid: torch.Tensor | None = None
        self.tail_valid: torch.Tensor | None = None
        self.head_output: torch.Tensor | None = None     # [B, m, C] first block's noisy rows, current full call


class FirstBlockRun(CacheRun):
    state_cls = FirstBlockState
    uses_blocks = True

    def __init__(self, spec: FirstBlock, run: CacheRunInfo) -> None:
        super().__init__(spec, run)
        if run.num_layers < 2:
            self.notes.append("first-block cache: the transformer has one block, nothing to skip")

    def head(self, forward: Callable[[], Any], kwargs: dict[str, Any], hook: BlockHook) -> Any:
        st: FirstBlockState = self.state()
        m = st.rows
        hidden_in = kwargs["hidden_states"]
        out = forward()
        hidden, encoder = hook.split(out)
        ids = self.ids(hidden.device)
        residual = hidden[:, :m] - hidden_in[:, :m]
        skip, measure = False, None
        if m > 0 and all_valid(st.head_valid, ids) and all_valid(st.tail_valid, ids):
            prev = st.head_residual[:, ids]
            measure = float((residual - prev).abs().mean() / prev.abs().mean().clamp_min(1e-12))
        if (measure is not None and not self.force and self.step >= self.spec.warmup
                and measure < self.spec.threshold and self.info.num_layers >= 2
                and (self.spec.max_skips is None or st.consecutive < self.spec.max_skips)):
            skip = True
        self.note(measure=measure)
        if skip:
            st.skipping = True
            self.note(skipped_blocks=self.info.num_layers - 1, skipped_from=1)
            return hook.join(with_rows(hidden, m, hidden[:, :m] + st.tail_residual[:, ids]), encoder)
        st.head_residual, st.head_valid = scatter_rows(st.head_residual, st.head_valid, ids, residual,
                                                       self.info.num_noisy)
        st.head_output = hidden[:, :m]
        return out

    def tail(self, forward: Callable[[], Any], kwargs: dict[str, Any], hook: BlockHook) -> Any:
        st: FirstBlockState = self.state()
        if st.skipping:
            return hook.passthrough(kwargs)
        out = forward()
        hidden, _ = hook.split(out)
        ids = self.ids(hidden.device)
        residual = hidden[:, : st.rows] - st.head_output
        st.tail_residual, st.tail_valid = scatter_rows(st.tail_residual, st.tail_valid, ids, residual,
                                                       self.info.num_noisy)
        st.head_output = None
        return out
