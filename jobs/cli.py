"""The `dropedit` command: one subcommand per job."""
from __future__ import annotations

import argparse
import sys

from . import ablate, bench, calibrate, edit, make_toy_data, report, simulate, train

COMMANDS = {"edit": edit, "run": ablate, "report": report, "calibrate": calibrate, "bench": bench, "train": train,
            "toy-data": make_toy_data, "simulate": simulate}


class ShowDefaults(argparse.HelpFormatter):
    """Shows an option's default where it has one worth reading (not None, False or an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dropedit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.__doc__.splitlines()[0], description=module.__doc__,
                                            formatter_class=ShowDefaults))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except (ValueError, OSError) as err:   # bad input: say what, not a traceback
        print(f"dropedit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
