"""The same study's verdicts on two (or more) models, side by side: which findings survive a change of toy.

    python -m studies.verdicts_across_models --out docs/toy-v3/verdicts.md \
        v2=docs/toy-results.md v3=docs/toy-v3/toy-results.md

Each page is one a study wrote (`docs/toy-results.md`, `docs/focus-study*.md`); its verdicts are the bullets of
its "Findings" or "Verdicts" section, which the studies compute from their tables. A bullet's claim is the text
before its first ": " (or its bold title); its verdict is the first of "met", "not met", "reproduces" or "does not
reproduce" it states, else its bold phrases, else "—" (a measurement without a verdict, such as a frontier).
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

SECTIONS = ("## Findings", "## Verdicts")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_WORDS = ("does not reproduce", "reproduces", "not met", "met")


def bullets(markdown: str) -> list[str]:
    """The bullets of the page's first findings/verdicts section, each joined onto one line."""
    lines, out, inside = markdown.splitlines(), [], False
    for line in lines:
        if line.startswith("## "):
            if inside:
                break
            inside = line.startswith(SECTIONS)
            continue
        if not inside:
            continue
        if line.startswith("- "):
            out.append(line[2:].strip())
        elif line.startswith("  ") and out:
            out[-1] += " " + line.strip()
    return out


def claim_and_verdict(bullet: str) -> tuple[str, str]:
    """(claim, verdict) of one bullet; see the module's docstring."""
    if bullet.startswith("**"):
        claim, _, rest = bullet[2:].partition("**")
        rest = rest.lstrip(": ")
    else:
        claim, _, rest = bullet.partition(": ")
    head = rest.replace("*", "")
    for word in _WORDS:
        if head.startswith(word):
            return claim.strip(), word
    bold = _BOLD.findall(rest)
    return claim.strip(), "; ".join(bold) if bold else "—"


def verdicts(path: Path) -> dict[str, str]:
    """claim -> verdict for one study page (a claim stated twice keeps its first verdict)."""
    found: dict[str, str] = {}
    for b in bullets(Path(path).read_text()):
        claim, verdict = claim_and_verdict(b)
        found.setdefault(claim, verdict)
    if not found:
        raise ValueError(f"{path}: no {' or '.join(SECTIONS)} section with bullets")
    return found


def table(pages: dict[str, Path]) -> str:
    """Markdown: one row per claim (in the first page's order), one verdict column per model, and whether the
    verdict is the same on every model that states it."""
    per = {name: verdicts(p) for name, p in pages.items()}
    claims: list[str] = []
    for found in per.values():
        claims += [c for c in found if c not in claims]
    head = "| claim | " + " | ".join(per) + " | same |\n|---|" + "---|" * (len(per) + 1)
    rows = []
    for c in claims:
        got = [per[name].get(c, "not stated") for name in per]
        rows.append("| " + " | ".join(_cell(x) for x in [c, *got, _same(got)]) + " |")
    return "\n".join([head, *rows])


def _same(got: list[str]) -> str:
    """"yes"/"**no**" across the models that give a verdict; "–" where fewer than two do."""
    stated = [v for v in got if v not in ("not stated", "—")]
    if len(stated) < 2:
        return "–"
    return "yes" if len(set(stated)) == 1 else "**no**"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _pages(specs: list[str]) -> dict[str, Path]:
    pages = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"expected NAME=PAGE, got {spec!r}")
        if not Path(path).is_file():
            raise ValueError(f"{path}: no such page")
        pages[name] = Path(path)
    if len(pages) < 2:
        raise ValueError("give at least two NAME=PAGE")
    return pages


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pages", nargs="+", help="NAME=PAGE, two or more, the same study on each model")
    p.add_argument("--out", type=Path, default=None, help="write the table here (default: print it)")
    p.add_argument("--title", default="Verdicts across models")
    args = p.parse_args(argv)
    try:
        pages = _pages(args.pages)
        body = table(pages)
    except ValueError as err:
        p.error(str(err))
    here = args.out.parent if args.out else Path(".")
    text = (f"# {args.title}\n\nWritten by `python -m studies.verdicts_across_models` from "
            + ", ".join(f"`{n}`: [{p}]({os.path.relpath(p, here)})" for n, p in pages.items())
            + ".\n\n" + body + "\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
