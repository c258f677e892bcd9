"""The `dropedit` command: one subcommand per job."""
from __future__ import annotations

import argparse
import sys

from . import ablate, bench, calibrate, edit, make_toy_data, report, train

COMMANDS = {"edit": edit, "run": ablate, "report": report, "calibrate": calibrate, "bench": bench, "train": train,
            "toy-data": make_toy_data}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dropedit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except (ValueError, OSError) as err:   # bad input: say what, not a traceback
        print(f"dropedit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
