"""The layer order written in docs/architecture.md holds in the code, and the document names every module.

A module may import its own package and packages of lower layers, never a package of its own layer or of a
layer above. No two modules import each other in a cycle, function-level imports included (only imports under
`if TYPE_CHECKING:` are exempt: they never run).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


def layers() -> list[set[str]]:
    """The first fenced block of the document: one layer per line, top first, its packages as `name/`."""
    block = DOC.read_text().split("```")[1]
    found = []
    for line in block.splitlines():
        names = re.findall(r"^\s*((?:[a-z_]+/\s+)+)", line)
        if names:
            found.append({n.rstrip("/") for n in names[0].split()})
    return [layer for layer in found if layer != {"tests"}]


def modules() -> dict[str, Path]:
    packages = set().union(*layers())
    found = {}
    for top in packages:
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules `name` imports (resolved to the longest known module name)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets |= {base} | {f"{base}.{a.name}" for a in node.names}
    out = set()
    for t in targets:
        while t and t not in known:
            t = t.rpartition(".")[0]
        if t and t != name:
            out.add(t)
    return out


def test_document_has_layers():
    assert len(layers()) >= 5 and {"jobs"} <= layers()[0] and "core" in layers()[-1]


def test_no_import_of_a_layer_above_or_beside():
    rank = {pkg: i for i, layer in enumerate(layers()) for pkg in layer}
    known = modules()
    bad = []
    for name, path in known.items():
        top = name.split(".")[0]
        for target in imports_of(name, path, known):
            other = target.split(".")[0]
            if other != top and rank[other] <= rank[top]:
                bad.append(f"{name} imports {target}")
    assert not bad, "\n".join(sorted(bad))


def test_no_module_cycles():
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    # a package's __init__ re-exporting its modules is not a cycle of two concerns
    graph = {n: {t for t in ts if not (n.startswith(t + ".") and known[t].name == "__init__.py")}
             for n, ts in graph.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack
                              else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "\n".join(cycles)


def test_document_names_every_module():
    text = DOC.read_text()
    missing = [str(path.relative_to(ROOT)) for path in modules().values()
               if path.name != "__init__.py" and path.name not in text]
    assert not missing, missing
