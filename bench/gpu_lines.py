"""The device run's one results file, OUT/edits.jsonl: one JSON line per event, appended as it happens and on
disk before the next edit starts, so that a kill at any moment keeps every finished edit.

Kinds of line (each carries `kind` and `run`): `run` (a run starts: its settings, the bench model's `Arch`, the
environment, the budget), `edit` (a timed edit, as `bench.speed.one_edit` returns it, with its phase, policy
and repetition), `skipped` (a label that cannot run, with the reason), `end` (the run finished: start-up and
warm-up seconds, bench.json written) and `exit` (bench/gpu.sh: the run's process ended, its status and log, or
the run was not started and why)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def append_line(path: str | Path, record: dict[str, Any]) -> None:
    """One JSON line, written with a single O_APPEND write and fsync'd: runs writing the same file side by side
    never interleave, and the line is complete on disk (or absent) whatever happens next."""
    data = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):   # a regular file writes all or fails; say so rather than leave half a line
            raise OSError(f"{path}: wrote {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: str | Path) -> list[dict[str, Any]]:
    """Every complete line (a line cut short by a kill, or not JSON, is left out)."""
    out = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "kind" in record and "run" in record:
            out.append(record)
    return out


@dataclass
class RunLines:
    """The lines of one run, in the order written."""

    name: str
    header: dict[str, Any] | None = None
    edits: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    exit: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        return self.end is not None


def group(lines: list[dict[str, Any]]) -> dict[str, RunLines]:
    """Lines by run, runs in the order they first appear. A run started again (a retry) starts afresh."""
    runs: dict[str, RunLines] = {}
    for line in lines:
        name, kind = str(line["run"]), line["kind"]
        if kind == "run":
            runs.pop(name, None)
        run = runs.setdefault(name, RunLines(name))
        if kind == "run":
            run.header = line
        elif kind == "edit":
            run.edits.append(line)
        elif kind == "skipped":
            run.skipped[line["policy"]] = line["reason"]
        elif kind == "end":
            run.end = line
        elif kind == "exit":
            run.exit = line
    return runs


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None if text == "" else text


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.gpu_lines append FILE key=value ...`: one line from the shell (numbers as numbers, an
    empty value as null), e.g. bench/gpu.sh's `exit` line of a run."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[0] != "append" or any("=" not in a for a in args[2:]):
        print("usage: python -m bench.gpu_lines append FILE kind=K run=NAME [key=value ...]", file=sys.stderr)
        return 2
    record = {k: _value(v) for k, v in (a.split("=", 1) for a in args[2:])}
    append_line(args[1], record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
