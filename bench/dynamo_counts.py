"""Dynamo counts of compiled transformer blocks over one edit: recompiles, graph breaks and token-count shapes.

    python -m bench.dynamo_counts [--policies "full;random;..."] [--steps 28] [--size 64] [--bucket 25%]

A tiny FLUX.1-Kontext model with the real depth pattern scaled down (19 dual + 38 single blocks -> 3 + 6) has
its blocks compiled with `torch.compile(dynamic=True, backend="eager")` (Dynamo's guards, recompiles and graph
breaks without a C++ compiler), `inner` (`actors.compiled_blocks`: each block's own forward; the per-edit hooks
run eagerly around it) or `module` (`nn.Module.compile`: the hooks are traced too). Each policy edits once
with bucketing off and on (`actors.shape_buckets`), on a fresh Dynamo cache. Reported per edit: compiled
frames and graphs, recompiles (frames compiled again after a guard failed; from Dynamo's recompile log),
recompiles per block (bucketing off: the same edit again on a model 1 + 2 blocks shallower, the difference per
block removed: a guard that tells blocks apart, such as a layer index or a dict's length, adds one per block),
graph breaks (`counters["graph_break"]`), and the distinct kept-source and active-noisy counts the steps used
(the shapes a static-shape compile would need one graph each for).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import torch

from actors.editor import Editor
from actors.shape_buckets import ShapeBuckets

DEFAULT_POLICIES = ("full", "random", "tokendrop", "forced-topi:keep=0.5,from_layer=2",
                    "forced-spotedit:active=0.3", "forced-focus:active=0.2", "spotedit")
DEPTH = (3, 6)   # dual-stream, single-stream blocks: FLUX.1-Kontext's 19 + 38 scaled down
SHALLOWER = (2, 4)   # the same pattern 3 blocks shallower: recompiles per block from the difference
# 2 heads x 24: a width (48) that no token count of a 64x64 edit equals (at 2 x 16 = 32 Dynamo's duck sizing ties
# the 32 image tokens of a full call to the weights' width and specialises the sequence length to it)
HEADS, HEAD_DIM = 2, 24
RECOMPILE_LOGGER = "torch._dynamo.guards.__recompiles"


@dataclass
class Counts:
    """One edit's Dynamo counts (see the module docstring)."""

    policy: str
    bucket: int | str
    mode: str | None
    frames: int = 0
    graphs: int = 0
    recompiles: int = 0
    per_block: float | None = None   # measured with bucketing off only
    graph_breaks: int = 0
    kept_shapes: int = 0
    active_shapes: int = 0
    kept_counts: list[int] = field(default_factory=list)
    active_counts: list[int] = field(default_factory=list)
    token_share: float = 1.0   # image tokens computed over the steps, relative to bucketing off (filled later)
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)


class _RecompileLog(logging.Handler):
    """Collects Dynamo's "Recompiling function ..." records (the first failed guard of each)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        lines = record.getMessage().splitlines()
        if lines and lines[0].startswith("Recompiling function"):
            reason = next((line.strip(" -") for line in lines[1:] if line.strip().startswith("-")), "")
            self.records.append(f"{lines[0].split(' in ')[0][len('Recompiling function '):]}: {reason}")


@contextlib.contextmanager
def recompile_log() -> Iterator[_RecompileLog]:
    """Dynamo's recompile reasons for the duration, without printing them (Dynamo formats them only while its
    "recompiles" log is on; torch's log settings are reset to the defaults afterwards)."""
    torch._logging.set_logs(recompiles=True)
    logger, handler = logging.getLogger(RECOMPILE_LOGGER), _RecompileLog()
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        torch._logging.set_logs()


def build_pipe(depth: tuple[int, int] = DEPTH, seed: int = 0) -> Any:
    from actors.tiny_models import build_tiny_flux_kontext
    return build_tiny_flux_kontext(seed, num_layers=depth[0], num_single_layers=depth[1],
                                   num_attention_heads=HEADS, attention_head_dim=HEAD_DIM)


def make_policy(label: str) -> Any:
    """A policy (shipped or forced) from "name:k=v,..."."""
    from bench.forced import make
    from bench.speed import parse_policy
    spec = parse_policy(label)
    return make(spec.name, **spec.params)


def _compiled(pipe: Any, mode: str | None) -> contextlib.AbstractContextManager[Any]:
    from actors.compiled_blocks import compiled_blocks
    from actors.routing import transformer_layers
    options = {"dynamic": True, "backend": "eager"}
    if mode is None:
        return contextlib.nullcontext()
    if mode == "inner":
        return compiled_blocks(pipe.transformer, **options)
    blocks = transformer_layers(pipe.transformer)
    for block in blocks:
        block.compile(**options)

    @contextlib.contextmanager
    def undo() -> Iterator[None]:
        try:
            yield
        finally:
            for block in blocks:
                block._compiled_call_impl = None
    return undo()


def count_edit(pipe: Any, label: str, bucket: int | str = 0, *, mode: str = "inner", steps: int = 28,
               size: int = 64, seed: int = 0) -> Counts:
    """One edit of `label` with the blocks compiled (`mode`, None: not compiled) and token counts bucketed
    (`bucket`: tokens or a share, 0 = off), on a fresh Dynamo cache; its counts."""
    from bench.speed import bench_image
    from torch._dynamo.utils import counters
    editor = Editor(pipe, make_policy(label), bucket=ShapeBuckets(bucket=bucket))
    torch._dynamo.reset()
    counters.clear()
    started = time.perf_counter()
    with _compiled(pipe, mode), recompile_log() as log:
        result = editor.edit(bench_image(size, seed), "make it red", seed=seed, steps=steps,
                                                  height=size, width=size)
    kept = [s.kept for s in result.trace]
    active = [s.noisy if s.active is None else s.active for s in result.trace]
    return Counts(policy=label, bucket=bucket, mode=mode, frames=counters["frames"]["ok"],
                  graphs=counters["stats"]["unique_graphs"], recompiles=len(log.records),
                  graph_breaks=sum(counters["graph_break"].values()), kept_shapes=len(set(kept)),
                  active_shapes=len(set(active)), kept_counts=kept, active_counts=active,
                  seconds=time.perf_counter() - started, reasons=log.records)


def image_tokens(c: Counts) -> int:
    """Image tokens entering the transformer over the edit (noisy rows with queries + source rows)."""
    return sum(a + k for a, k in zip(c.active_counts, c.kept_counts))


def measure(labels: Sequence[str], buckets: Sequence[int | str] = (0, "25%"), *, mode: str = "inner", steps: int = 28,
            size: int = 64, depth: tuple[int, int] = DEPTH) -> list[Counts]:
    """Every policy at every bucket; `token_share` relative to the same policy with bucketing off; recompiles per
    block from a second edit with bucketing off on a model `SHALLOWER`."""
    pipe, shallow, rows = build_pipe(depth), build_pipe(SHALLOWER), []
    for label in labels:
        base = None
        for bucket in buckets:
            c = count_edit(pipe, label, bucket, mode=mode, steps=steps, size=size)
            if base is None:
                base = c
                fewer = count_edit(shallow, label, 0, mode=mode, steps=steps, size=size)
                c.per_block = (c.recompiles - fewer.recompiles) / (sum(depth) - sum(SHALLOWER))
            c.token_share = image_tokens(c) / max(1, image_tokens(base))
            rows.append(c)
    return rows


def table(rows: Sequence[Counts]) -> str:
    """The counts as a Markdown table."""
    head = ("| policy | bucket | compile | recompiles | recompiles per block | graph breaks | graphs | kept shapes "
            "| active shapes | image tokens vs off |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [f"| {c.policy} | {c.bucket or 'off'} | {c.mode} | {c.recompiles} | "
             f"{'' if c.per_block is None else f'{c.per_block:g}'} | {c.graph_breaks} "
             f"| {c.graphs} | {c.kept_shapes} | {c.active_shapes} | {c.token_share:.3f} |" for c in rows]
    return "\n".join([head, *lines])


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policies", default=";".join(DEFAULT_POLICIES),
                   help="policy labels separated by ';'")
    p.add_argument("--bucket", default="25%", help="bucket for the 'on' run: tokens or a share ('25%%'); 0: off only")
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--mode", choices=("inner", "module"), default="inner")
    p.add_argument("--json", help="write every row (with the recompile reasons) here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    on = ShapeBuckets(bucket=a.bucket)
    buckets = (0, on.bucket) if on.on else (0,)
    rows = measure([s for s in a.policies.split(";") if s], buckets, mode=a.mode, steps=a.steps, size=a.size)
    print(f"torch {torch.__version__}, CPU, backend eager, dynamic=True, tiny FLUX.1-Kontext {DEPTH[0]}+{DEPTH[1]} "
          f"blocks, {a.size}x{a.size}, {a.steps} steps")
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump([asdict(c) for c in rows], f, indent=1)


if __name__ == "__main__":
    main()
