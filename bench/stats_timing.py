"""One recorded layer's attention statistics, before and after they came from the layer's own attention call
(CPU, paired, interleaved):

    python -m bench.stats_timing [--heads 8] [--head-dim 64] [--text 64] [--noisy 1024] [--reps 7] [--threads 1]

A dual-stream FluxAttention of the real class (random weights, fp32) on [text, noisy, source] tokens.
`stock`: the stock processor alone (the layer without statistics). `before`: what a recorded layer did until
issue 31 (q, k, v recomputed and rotated, the fp32 softmax of the noisy queries over every key in chunks of
1024, value norms, similarity, then the stock processor). `after`: `FluxStatsProcessor` on a recorded layer
(one attention call with its log-sum-exp, noisy × source products). Prints the machine's load with the times.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from diffusers.models.transformers.transformer_flux import FluxAttention, FluxAttnProcessor, FluxPosEmbed

from actors.attention_stats import AttentionCollector, LayerStats, similarity_to_noisy
from actors.families.flux_kontext.attention import FluxStatsProcessor, joint_qkv, rotate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))   # the reference lives with the tests
from stats_reference import source_attention  # noqa: E402


def layer(heads: int, head_dim: int, text: int, tokens: int) -> tuple[FluxAttention, tuple, dict]:
    dim = heads * head_dim
    attn = FluxAttention(query_dim=dim, heads=heads, dim_head=head_dim, added_kv_proj_dim=dim,
                         processor=FluxAttnProcessor()).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.zeros(text, 3), torch.randint(0, 64, (tokens, 3), generator=g).float()])
    emb = FluxPosEmbed(theta=10000, axes_dim=[head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8])(ids)
    hidden, encoder = torch.randn(1, tokens, dim, generator=g), torch.randn(1, text, dim, generator=g)
    return attn, (hidden, encoder), {"image_rotary_emb": emb}


def before(attn: FluxAttention, args: tuple, kwargs: dict, noisy: int) -> tuple[torch.Tensor, ...]:
    hidden, encoder = args
    q, k, v = joint_qkv(attn, hidden, encoder)
    emb = kwargs["image_rotary_emb"]
    stats = source_attention(rotate(q, emb), rotate(k, emb), v, text_len=encoder.shape[1], num_noisy=noisy)
    similarity_to_noisy(hidden, noisy)
    attn.processor(attn, hidden, encoder, None, emb)
    return stats


def after(attn: FluxAttention, args: tuple, kwargs: dict, noisy: int) -> LayerStats:
    collector = AttentionCollector(num_noisy=noisy)
    collector.request((0,))
    FluxStatsProcessor(attn.processor, 0, collector)(attn, *args, **kwargs)
    return collector.take()[0][0]


def paired(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, list[float]]:
    """Wall seconds of each function, interleaved (order rotated each round) after one untimed warm-up."""
    names, out = list(fns), {name: [] for name in fns}
    with torch.no_grad():
        for name in names:
            fns[name]()
        for r in range(reps):
            for name in names[r % len(names):] + names[: r % len(names)]:
                started = time.perf_counter()
                fns[name]()
                out[name].append(time.perf_counter() - started)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--text", type=int, default=64)
    p.add_argument("--noisy", type=int, default=1024)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    attn, args, kwargs = layer(a.heads, a.head_dim, a.text, 2 * a.noisy)
    with torch.no_grad():
        old, new = before(attn, args, kwargs, a.noisy), after(attn, args, kwargs, a.noisy)
    rel = max(float(((n - o).abs() / o.abs().clamp_min(1e-12)).max())
              for n, o in zip((new.mass, new.value_norm, new.influence), old))
    print(f"tokens: {a.text} text + {a.noisy} noisy + {a.noisy} source, {a.heads} heads x {a.head_dim}, fp32, "
          f"{a.threads} thread(s); statistics after vs before: max relative difference {rel:.1e}")
    print(f"load average before: {os.getloadavg()}")
    times = paired({"stock": lambda: attn.processor(attn, *args, None, kwargs["image_rotary_emb"]),
                    "before": lambda: before(attn, args, kwargs, a.noisy),
                    "after": lambda: after(attn, args, kwargs, a.noisy)}, a.reps)
    print(f"load average after: {os.getloadavg()}")
    for name, s in times.items():
        print(f"{name:>6}: median {1e3 * statistics.median(s):.1f} ms [{1e3 * min(s):.1f}-{1e3 * max(s):.1f}] "
              f"over {len(s)} reps")
    stock = statistics.median(times["stock"])
    for name in ("before", "after"):
        extra = [t - s for t, s in zip(times[name], times["stock"])]
        print(f"{name:>6} - stock, paired: median {1e3 * statistics.median(extra):.1f} ms "
              f"[{1e3 * min(extra):.1f}-{1e3 * max(extra):.1f}] ({statistics.median(times[name]) / stock:.2f}x stock)")


if __name__ == "__main__":
    main()
