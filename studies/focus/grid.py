"""The study's configurations ("POLICY[k=v;...]|CACHE", as `studies.cache.compare.run_config` reads them), in run
order, and the kind of each (what the verdicts compare)."""
from __future__ import annotations

TOPI = "exempt_layers=1;top_m=2"   # the toy's 6 blocks: 1 exempt front block (the paper: 10 of 57)
CACHES = ("first-block:threshold=0.12", "first-block:threshold=0.2", "first-block:threshold=0.25",
          "magcache:threshold=0.12", "magcache:threshold=0.25", "taylorseer:interval=3", "taylorseer:interval=5",
          "taylorseer:interval=8", "velocity-decay")
# the seed methods at their papers' operating points (the family's defaults where the papers give them)
SEEDS = ("tokendrop|", "tokendrop[omega=0]|", "random[ratio=0.5]|", f"topi[tau=0.85;{TOPI}]|", "spotedit|",
         "spotedit[tau=0.5]|", "sparse_context|")   # Sparse Context without its fine-tune (the toy study has it)
PEERS = ("peer:cache-dit|", "peer:cache-dit[taylorseer=true]|", "peer:regione|")
REGIONE = ("regione|", "regione[velocity_cache=false]|")
COMPOSITIONS = ("spotedit|first-block:threshold=0.12", "spotedit|taylorseer:interval=3",
                "tokendrop|first-block:threshold=0.12", f"topi[tau=0.85;{TOPI}]|taylorseer:interval=3",
                "regione[velocity_cache=false]|first-block:threshold=0.12")
# focus at the setting the pilot chose on training-seed records (docs/focus-study/pilot.md: τ 0.15 on the toy; the
# shipped default τ is RegionE's η for real Kontext), its shipped defaults, faster and slower settings, then its
# ablation: one part changed at a time (docs/focus.md)
FOCUS = "focus[tau=0.15]|"
FOCUS_SETTINGS = (FOCUS, "focus|", "focus[tau=0.3]|", "focus[tau=0.15;cache=taylorseer:interval=8]|",
                  "focus[tau=0.15;refresh=0.35]|", "focus[tau=0.15;cache=first-block:threshold=0.2]|")
ABLATION = {"no temporal cache": "focus[tau=0.15;cache=none]|", "no refresh": "focus[tau=0.15;refresh=0]|",
            "reference keys dropped (margin 2)": "focus[tau=0.15;reference_margin=2]|",
            "no margin": "focus[tau=0.15;margin=0]|", "one warm-up step": "focus[tau=0.15;warmup=0.04]|",
            "source pasted back": "focus[tau=0.15;finish=source]|",
            "SpotEdit's selector (its τ)": "focus[region=lpips_vae]|",
            "no region (the cache alone)": "focus[tau=0]|"}


def grid() -> tuple[str, ...]:
    """Every configuration, in run order: the references first, focus and RegionE early."""
    out = ["full|", *FOCUS_SETTINGS[:2], *REGIONE, *(f"full|{c}" for c in CACHES), *SEEDS, *PEERS,
           *FOCUS_SETTINGS[2:], *ABLATION.values(), *COMPOSITIONS]
    return tuple(dict.fromkeys(out))


def kind(config: str) -> str:
    """full | cache | seed | peer | regione | composition | focus."""
    what, _, cache = config.partition("|")
    name = what.partition("[")[0]
    if what.startswith("peer:"):
        return "peer"
    if name == "full":
        return "cache" if cache else "full"
    if name in ("focus", "regione"):
        return name if not cache else "composition"
    return "composition" if cache else "seed"
