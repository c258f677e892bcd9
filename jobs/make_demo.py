"""`python -m jobs.make_demo [--out DIR]`: write the demo's records (configs/demo_manifest.jsonl + demo_images/).

DIR (default `configs/`) gets `demo_manifest.jsonl` and, in `DIR/demo_images/`, the source, target and mask
PNGs of five held-out toy edits (`toy/demo.py` says which and why); the same files every time.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toy.demo import CONFIGS, DEMO_RECORDS, SIZE, write_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.make_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CONFIGS, help="output folder (default: the repo's configs/)")
    args = parser.parse_args(argv)
    try:
        manifest = write_demo(args.out)
    except (ValueError, OSError) as err:
        print(f"make_demo: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"manifest": str(manifest), "records": len(DEMO_RECORDS), "size": SIZE}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
