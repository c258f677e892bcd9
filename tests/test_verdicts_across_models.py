"""The same study's verdicts on two models, side by side (studies/verdicts_across_models.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from studies import verdicts_across_models as vam

TOY_A = """# The seeds' claims

## Findings

Computed from the tables.

- (a) Random drop lowers background PSNR as the ratio rises: **reproduces** (26.1 → 24.2 dB).
- (d) ω = 0.4, paper kernel: the adaptive keep ratio grows: **does not reproduce** (Pearson r = -0.24 over all
  records, 0.38 over the local edits).
- (e) Against `full`: SpotEdit τ=0.2: 40% skipped.

## (a) Random drop
- not a finding: ignored
"""

TOY_B = TOY_A.replace("**does not reproduce** (Pearson r = -0.24", "**reproduces** (Pearson r = 0.31")

FOCUS = """## Verdicts (computed from the tables)

- **4× FLOP-ideal at 1024² (local edits)**: met: `focus[tau=0.15]|` 4.13×.
- **Background PSNR no worse than full's**: not met: 19.2 dB vs full's 19.3 dB.
- **Pareto frontier (local edits)**: `full|` (1.00×) → `focus|` (4.0×).
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toy_findings_are_read_with_their_continuation_lines() -> None:
    found = {c: v for c, v in map(vam.claim_and_verdict, vam.bullets(TOY_A))}
    assert found == {
        "(a) Random drop lowers background PSNR as the ratio rises": "reproduces",
        "(d) ω = 0.4, paper kernel": "does not reproduce",
        "(e) Against `full`": "—",
    }
    assert vam.bullets(TOY_A)[1].endswith("0.38 over the local edits).")


def test_focus_verdicts_split_met_from_not_met() -> None:
    found = dict(map(vam.claim_and_verdict, vam.bullets(FOCUS)))
    assert found["4× FLOP-ideal at 1024² (local edits)"] == "met"
    assert found["Background PSNR no worse than full's"] == "not met"
    assert found["Pareto frontier (local edits)"] == "—"


def test_a_changed_verdict_is_flagged_and_pipes_are_escaped(tmp_path: Path) -> None:
    a, b = _write(tmp_path, "a.md", TOY_A), _write(tmp_path, "b.md", TOY_B)
    rows = vam.table({"v2": a, "v3": b}).splitlines()
    assert rows[0] == "| claim | v2 | v3 | same |"
    changed = next(r for r in rows if r.startswith("| (d)"))
    assert changed.endswith("| does not reproduce | reproduces | **no** |")
    assert next(r for r in rows if r.startswith("| (a)")).endswith("| yes |")
    assert next(r for r in rows if r.startswith("| (e)")).endswith("| — | — | – |")
    f = _write(tmp_path, "f.md", FOCUS)
    assert "`focus[tau=0.15]\\|`" not in vam.table({"x": f, "y": f})   # the pipe is in a bullet's rest, not a claim
    frontier = _write(tmp_path, "g.md", "## Verdicts\n\n- **`a|b` kept**: met: x\n")
    assert "| `a\\|b` kept | met | met | yes |" in vam.table({"x": frontier, "y": frontier})


def test_a_page_without_verdicts_and_bad_arguments_are_refused(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    empty = _write(tmp_path, "e.md", "# nothing\n\n## Tables\n- a row\n")
    with pytest.raises(ValueError, match="no ## Findings or ## Verdicts"):
        vam.verdicts(empty)
    with pytest.raises(SystemExit):
        vam.main(["only=" + str(empty)])
    assert "at least two" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        vam.main(["a=" + str(empty), "b=" + str(tmp_path / "missing.md")])
    assert "no such page" in capsys.readouterr().err


def test_the_cli_writes_links_relative_to_its_page(tmp_path: Path) -> None:
    a, b = _write(tmp_path, "a.md", TOY_A), _write(tmp_path, "b.md", TOY_B)
    out = tmp_path / "sub" / "verdicts.md"
    assert vam.main(["v2=" + str(a), "v3=" + str(b), "--out", str(out), "--title", "T"]) == 0
    text = out.read_text()
    assert text.startswith("# T\n") and "(../a.md)" in text and "| **no** |" in text


def test_the_committed_toy_study_page_parses() -> None:
    found = vam.verdicts(Path(__file__).resolve().parents[1] / "docs" / "toy-results.md")
    assert found["(a) Random drop lowers background PSNR as the ratio rises"] in ("reproduces", "does not reproduce")
    assert len(found) >= 10
