"""What every temporal cache does inside one edit: per-branch state, the hooks, and what was skipped.

A `CacheRun` belongs to one edit (`CacheSpec.start`) and is one of its engine mechanisms
(`actors.mechanisms.Mechanism`). `attached()` installs its hooks on the transformer for that edit and removes
them afterwards, whatever happens. Its `before_call` reads the step's plan before the transformer call(s), and
its `after_call` hands the step one `CacheCall` per transformer call (`StepCall.cache_calls`).

State is kept per CFG branch: a stateful hook on the transformer carries a diffusers `StateManager`, so the
`transformer.cache_context(name)` the Qwen adapter opens around each call ("cond", "uncond") selects the
branch's own state, exactly as diffusers' cache hooks do; calls made outside any context (Flux Kontext's single
call per step) use the branch "cond". Nothing is shared between branches: not the residuals, not the
accumulated error, not the Taylor factors.

Token pruning and the cache. Whatever the policy does to the token set, the rows of the image stream that
matter for the step's result are the *noisy* tokens the call computes (the adapters keep only those rows of the
output): every noisy token, or SpotEdit's active ones, always first in the image stream at every block (ToPi
routes source rows after them, SpotEdit gathers the active noisy rows first). Each technique therefore
  - measures its decision on those noisy rows only (never on source rows, whose number and identity change
    with the kept set), and
  - remembers what it reuses (residuals, Taylor factors) per noisy token, in a buffer over the whole noisy
    grid indexed by the token's grid position, updated at the rows a computed call produced and read at the
    rows a skipped call needs; a call whose rows were never all computed is not skipped.
A call whose internals the policy needs is never skipped (a forced call, which refreshes the cache): a plan
that asks for attention statistics (ToPi's anchor steps, Sparse Context's attention selection) and the full
steps that fill a query-skipping policy's K/V cache (every full step of SpotEdit; those `Plan.refreshes_context`
marks: focus's and RegionE's full steps before partial ones). Source-token rows of a skipped call are left as they entered (their
output is discarded by the adapters).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks._helpers import TransformerBlockRegistry
from diffusers.hooks.hooks import CacheContext, StateManager

from ..mechanisms import EditContext, Mechanism, StepCall
from actors.edit_result import CacheCall
from core.registry import PluginError
from ..routing import transformer_layers

ROOT_HOOK = "dropedit_cache_call"
BLOCK_HOOK = "dropedit_cache_block"


class CacheError(PluginError):
    """A cache name or parameter that cannot be accepted (the message names the accepted values), or a
    transformer whose blocks a cache cannot hook."""


DEFAULT_BRANCH = "cond"   # calls outside any cache_context: Flux Kontext's one (conditional) call per step


@dataclass(frozen=True)
class CacheRunInfo:
    """What a cache may know about one edit before it starts."""

    family: str               # "flux" | "qwen"
    steps: int
    num_noisy: int
    num_layers: int           # transformer blocks (Flux: dual then single)
    transformer: torch.nn.Module
    device: torch.device = torch.device("cpu")   # where the edit's latents are
    skips_queries: bool = False   # the policy skips queries (SpotEdit): its full steps refresh its K/V cache
    sigmas: tuple[float, ...] = ()   # the scheduler's sigmas, steps + 1 values (velocity-decay's ratio)

    @classmethod
    def of(cls, edit: EditContext) -> CacheRunInfo:
        run = edit.run
        return cls(family=run.family, steps=run.steps, num_noisy=run.num_noisy, num_layers=run.num_layers,
                   transformer=edit.transformer, device=run.device, skips_queries=edit.needs.query_skip is not None,
                   sigmas=tuple(float(s) for s in run.sigmas))


class BranchState:
    """One CFG branch's state; subclasses add what their technique remembers."""

    def __init__(self) -> None:
        self.skipping = False     # the current call is being served from the cache
        self.rows = 0             # noisy rows of the current call
        self.consecutive = 0      # skipped calls in a row

    def reset(self, *args: Any, **kwargs: Any) -> None:
        self.__init__()


class CarrierHook(ModelHook):
    """On the transformer: carries the per-edit StateManager (so `cache_context` selects the branch) and
    marks the boundaries of each call for the run."""

    _is_stateful = True

    def __init__(self, run: "CacheRun") -> None:
        super().__init__()
        self.run = run
        self.state = run.states

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        return self.run._call(lambda: self.fn_ref.original_forward(*args, **kwargs), args, kwargs)

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state.reset()
        return module


class BlockHook(ModelHook):
    """On a transformer block: hands the block's call to the run (`head`, `middle` or `tail`)."""

    def __init__(self, run: "CacheRun", role: str) -> None:
        super().__init__()
        self.run, self.role = run, role
        self.meta = None

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        self.meta = TransformerBlockRegistry.get(type(module))
        if self.meta.return_encoder_hidden_states_index is None:
            # e.g. FLUX.2's single-stream blocks: [text, image] in, one sequence out; the residuals these
            # caches keep are per stream
            raise CacheError(f"cache {self.run.spec.name!r} needs blocks that return image and text separately; "
                             f"{type(module).__name__} returns them as one sequence")
        return module

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise RuntimeError("cache block hooks expect the blocks to be called with keyword arguments")
        forward = lambda: self.run_block(module, kwargs)   # noqa: E731
        return getattr(self.run, self.role)(forward, kwargs, self)

    def run_block(self, module: torch.nn.Module, kwargs: dict[str, Any]) -> Any:
        return self.fn_ref.original_forward(**kwargs)

    def split(self, output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(image hidden states, text hidden states) of a block's output."""
        return output[self.meta.return_hidden_states_index], output[self.meta.return_encoder_hidden_states_index]

    def join(self, hidden: torch.Tensor, encoder: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out: list[Any] = [None, None]
        out[self.meta.return_hidden_states_index] = hidden
        out[self.meta.return_encoder_hidden_states_index] = encoder
        return tuple(out)

    def passthrough(self, kwargs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        return self.join(kwargs["hidden_states"], kwargs["encoder_hidden_states"])


class CacheRun(Mechanism):
    """One edit's cache. Subclasses set `state_cls`, `uses_blocks`, and implement `decide_call` (whole calls)
    or `head`/`middle`/`tail` (blocks)."""

    state_cls: type[BranchState] = BranchState
    uses_blocks = False
    attaches_first = True   # its block hooks sit inside the routing hooks, seeing routed rows

    def __init__(self, spec: Any, run: CacheRunInfo) -> None:
        self.spec, self.info = spec, run
        self.states = StateManager(self.state_cls)
        self.step = 0
        self.noisy_ids: torch.Tensor | None = None   # noisy grid positions of the call's noisy rows; None = all
        self.force = False
        self.calls: list[CacheCall] = []
        self._record: dict[str, Any] | None = None
        self.notes: list[str] = []

    # ---- the engine's side (a Mechanism) ------------------------------------------------------------------
    def attached(self) -> ContextManager[Any]:
        return _installed(self)

    def before_call(self, call: StepCall) -> None:
        """Which noisy rows the step's calls compute, and whether the policy needs their internals."""
        self.step = int(call.index)
        active = call.plan.active_noisy
        self.noisy_ids = None if active is None or bool(active.all()) else \
            torch.nonzero(active.to(self.info.device)).flatten()
        refreshes = call.plan.refreshes_context is not False   # None: every full step may fill it
        spot_full = self.info.skips_queries and self.noisy_ids is None and refreshes
        self.force = bool(call.plan.attention_layers) or spot_full

    def after_call(self, call: StepCall, v: torch.Tensor) -> torch.Tensor:
        call.cache_calls, self.calls = tuple(self.calls), []
        return v

    def result_notes(self) -> list[str]:
        return list(self.notes)

    def result_fields(self) -> dict[str, Any]:
        return {"cache_params": self.applied(), "cache_summary": self.summary()}

    def applied(self) -> dict[str, Any]:
        return {"name": self.spec.name, **self.spec.params()}

    def summary(self) -> dict[str, Any]:
        return {}

    # ---- shared helpers ----------------------------------------------------------------------------------
    @property
    def branch(self) -> str:
        ctx = self.states._context
        return DEFAULT_BRANCH if ctx is None else ctx.name

    def state(self) -> BranchState:
        return self.states.get_state()

    def ids(self, device: torch.device) -> torch.Tensor:
        if self.noisy_ids is None:
            return torch.arange(self.info.num_noisy, device=device)
        return self.noisy_ids.to(device)

    def rows(self) -> int:
        return self.info.num_noisy if self.noisy_ids is None else int(self.noisy_ids.numel())

    def note(self, **fields: Any) -> None:
        if self._record is not None:
            self._record.update(fields)

    def _call(self, forward: Callable[[], Any], args: tuple, kwargs: dict[str, Any]) -> Any:
        outside = self.states._context is None
        if outside:   # a call outside any cache_context: the default branch, for this call only
            self.states.set_context(CacheContext(DEFAULT_BRANCH))
        self._record = {"branch": self.branch, "forced": self.force}
        try:
            st = self.state()
            st.skipping, st.rows = False, self.rows()
            out = self.decide_call(forward, args, kwargs, st)
            st.skipping = False
        finally:
            record, self._record = self._record, None
            if outside:
                self.states.set_context(None)
        call = CacheCall(**record)
        st.consecutive = st.consecutive + 1 if call.skipped else 0
        self.calls.append(call)
        return out

    def decide_call(self, forward: Callable[[], Any], args: tuple, kwargs: dict[str, Any], st: BranchState) -> Any:
        return forward()

    def head(self, forward: Callable[[], Any], kwargs: dict[str, Any], hook: BlockHook) -> Any:
        return forward()

    def middle(self, forward: Callable[[], Any], kwargs: dict[str, Any], hook: BlockHook) -> Any:
        return hook.passthrough(kwargs) if self.state().skipping else forward()

    def tail(self, forward: Callable[[], Any], kwargs: dict[str, Any], hook: BlockHook) -> Any:
        return self.middle(forward, kwargs, hook)


def scatter_rows(buffer: torch.Tensor | None, valid: torch.Tensor | None, ids: torch.Tensor, rows: torch.Tensor,
                 num_noisy: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Write `rows` ([B, m, C], one per id) into a per-noisy-token buffer [B, num_noisy, C] and mark them valid."""
    if buffer is None or buffer.shape[0] != rows.shape[0] or buffer.shape[2] != rows.shape[2]:
        buffer = torch.zeros(rows.shape[0], num_noisy, rows.shape[2], dtype=rows.dtype, device=rows.device)
        valid = torch.zeros(num_noisy, dtype=torch.bool, device=rows.device)
    buffer[:, ids] = rows.to(buffer.dtype)
    valid[ids] = True
    return buffer, valid


def all_valid(valid: torch.Tensor | None, ids: torch.Tensor) -> bool:
    return valid is not None and bool(valid[ids].all())


def with_rows(hidden: torch.Tensor, m: int, rows: torch.Tensor) -> torch.Tensor:
    """`hidden` with its first m rows replaced by `rows`."""
    if m == hidden.shape[1]:
        return rows.to(hidden.dtype)
    return torch.cat([rows.to(hidden.dtype), hidden[:, m:]], dim=1)


@contextlib.contextmanager
def _installed(run: CacheRun) -> Iterator[CacheRun]:
    """The run's hooks on the transformer (and its blocks), for one edit; removed whatever happens."""
    transformer = run.info.transformer
    if getattr(transformer, "is_cache_enabled", False):
        raise RuntimeError("the transformer already has a diffusers cache enabled (enable_cache): disable it "
                           "before editing with a dropedit cache")
    root = HookRegistry.check_if_exists_or_initialize(transformer)
    blocks = transformer_layers(transformer) if run.uses_blocks else []
    registries: list[HookRegistry] = []
    try:
        root.register_hook(CarrierHook(run), ROOT_HOOK)
        for i, block in enumerate(blocks):
            role = "head" if i == 0 else "tail" if i == len(blocks) - 1 else "middle"
            registry = HookRegistry.check_if_exists_or_initialize(block)
            registry.register_hook(BlockHook(run, role), BLOCK_HOOK)
            registries.append(registry)
        yield run
    finally:
        for registry in registries:
            registry.remove_hook(BLOCK_HOOK, recurse=False)
        root.remove_hook(ROOT_HOOK, recurse=False)
        run.states.reset()
