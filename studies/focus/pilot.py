"""The pilot that chose focus's defaults on the toy: training-seed records only (toy.data seed 0), never the
held-out ones the study scores, each setting against `full` on the same records.

    python -m studies.focus.pilot [--records 16] [--config "focus[tau=0.1]|" ...]

Rows go to OUT/pilot-rows.jsonl (resumable); the summary (means over local and over global edits) is printed and
written to OUT/pilot.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .records import pilot_records
from .run import MODEL, SIZE, run
from .summary import summary_table

SETTINGS = ("full|", "focus|", "focus[tau=0.03]|", "focus[tau=0.15]|", "focus[tau=0.3]|", "focus[margin=0]|",
            "focus[margin=2]|", "focus[warmup=0.2]|", "focus[cache=none]|", "focus[cache=first-block:threshold=0.2]|",
            "focus[cache=taylorseer:interval=5]|", "focus[cache=velocity-decay]|", "focus[reference_margin=null]|",
            "focus[reference_margin=0]|", "focus[refresh=0.25]|", "focus[final=0.07]|", "focus[finish=source]|",
            "focus[region=lpips_vae]|", "focus[region=l2;tau=0.05]|")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs") / "focus-study")
    p.add_argument("--work", type=Path, default=Path("results") / "focus-study")
    p.add_argument("--records", type=int, default=16)
    p.add_argument("--config", action="append", default=None)
    args = p.parse_args(argv)
    records = pilot_records(args.work, args.records, SIZE)
    out = args.out / "pilot"
    run(out, records, args.config or SETTINGS, paired=0, log=lambda m: print(m, flush=True))
    text = summary_table(out / "rows.jsonl", MODEL)
    (args.out / "pilot.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
