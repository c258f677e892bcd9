"""The cache study's grid (every configuration, in run order, and what kind each is) and its rows on disk
(OUT/rows.jsonl, appended one configuration at a time, so that a rerun resumes)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from costs import flops

CACHES = ("first-block:threshold=0.05", "first-block:threshold=0.12", "first-block:threshold=0.18",
          "first-block:threshold=0.2", "first-block:threshold=0.25",
          "magcache:threshold=0.06", "magcache:threshold=0.12", "magcache:threshold=0.25",
          "taylorseer:interval=3", "taylorseer:interval=5", "taylorseer:interval=8")
PROJECTED_NOISY = flops.image_tokens(1024)   # FLUX.1-Kontext-dev at 1024²: 64² noisy tokens (and as many source)
TOPI = "exempt_layers=1;top_m=2"   # the toy's 6 blocks: 1 exempt front block (the paper: 10 of 57)
POLICIES = ("tokendrop[omega=0]", "tokendrop[omega=0.4]", "random[ratio=0.25]", "random[ratio=0.5]",
            f"topi[tau=0.85;{TOPI}]", f"topi[tau=0.5;{TOPI}]", "spotedit[tau=0.2]", "spotedit[tau=0.5]")
PEERS = ("peer:cache-dit|", "peer:cache-dit[taylorseer=true]|", "peer:regione|")
# compositions: every cache at a middle setting, then at a faster one, with one setting of every policy
COMPOSE_CACHES = (("first-block:threshold=0.12", "magcache:threshold=0.25", "taylorseer:interval=3"),
                  ("first-block:threshold=0.25", "taylorseer:interval=5"))
COMPOSE_POLICIES = ("tokendrop[omega=0]", "random[ratio=0.5]", f"topi[tau=0.85;{TOPI}]", "spotedit[tau=0.2]")


def grid() -> tuple[str, ...]:
    """Every configuration of the study, in run order (the ones the verdicts need first)."""
    out = ["full|", *(f"full|{c}" for c in CACHES), *(f"{p}|" for p in POLICIES), *PEERS]
    for group in COMPOSE_CACHES:
        out += [f"{p}|{c}" for c in group for p in COMPOSE_POLICIES]
    return tuple(out)


def family(config: str) -> str:
    """full | cache | pruning | cache+pruning | peer."""
    what, _, cache = config.partition("|")
    if what.startswith("peer:"):
        return "peer"
    policy = what.partition("[")[0]
    if policy == "full":
        return "cache" if cache else "full"
    return "cache+pruning" if cache else "pruning"


def parts(config: str) -> tuple[str, str] | None:
    """A composition's two parts as configurations: (the policy alone, the cache alone); None otherwise."""
    if family(config) != "cache+pruning":
        return None
    what, _, cache = config.partition("|")
    return f"{what}|", f"full|{cache}"


def unavailable(config: str) -> str | None:
    """Why a peer cannot run on this machine (None when it can, and for our own configurations)."""
    what = config.partition("|")[0]
    if not what.startswith("peer:"):
        return None
    from actors import peers

    return peers.available().get(what[5:].partition("[")[0], "unknown peer")


# ---- resume ------------------------------------------------------------------------------------------------------
def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every per-record row written so far (a torn last line, from an interrupted write, is ignored)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def finished(rows: Iterable[dict[str, Any]], model: str, steps: int, records: Iterable[str]) -> set[str]:
    """Configurations with a row for every one of `records` at this model and step count."""
    want, seen = set(records), {}
    for r in rows:
        if r.get("model") == model and r.get("steps") == steps:
            seen.setdefault(r["config"], set()).add(r["record"])
    return {c for c, got in seen.items() if want <= got}


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """One configuration's rows, appended together and flushed to disk (a rerun then skips it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
        f.flush()


def pending(configs: Iterable[str], rows: list[dict[str, Any]], model: str, steps: int,
            records: Iterable[str]) -> list[str]:
    """The configurations still to run: not finished, and runnable here."""
    done = finished(rows, model, steps, list(records))
    return [c for c in configs if c not in done and unavailable(c) is None]


