"""How the book reads: per notebook, the export cells' lengths and how many are followed by a test,
and the package's import graph (circles, arrows back up the chapter order, imports inside
functions).

    python tests/book_metrics.py            # the tables
    python tests/book_metrics.py --check    # also exit 1 when a target of issue 17 is missed

A cell's length counts its non-blank lines that are not `#|` directives. An export cell is
"followed by a test" when the next code cell exports nothing and calls a test helper
(`test_eq`, `test_fail`, `assert`, ...). The chapter order is the notebooks' order (`00_config`
... `16_main`): a module importing one from a later chapter is a back-arrow. A package import
inside a function is counted, and listed when no comment (on its line, or on an import line right
above it) says why it is not at the top.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NBS, PKG = REPO / "nbs", REPO / "stockstock"
TEST_CALL = re.compile(r"\b(test_\w+|assert|pytest\.raises|test_fail)\b")
TARGET_MEDIAN, TARGET_MAX, TARGET_FOLLOWED = 10, 30, 0.80


def _lines(src: str) -> int:
    return sum(1 for line in src.splitlines() if line.strip() and not line.startswith("#|"))


def _is_export(src: str) -> bool:
    return any(line.strip() in ("#| export", "#| exports", "#|export")
               for line in src.splitlines())


def notebook_cells(path: Path) -> tuple[list[int], int]:
    "Lengths of `path`'s export cells and how many are followed directly by a test cell."
    code = [("".join(c["source"]) if isinstance(c["source"], list) else c["source"])
            for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    lengths, followed = [], 0
    for i, src in enumerate(code):
        if not _is_export(src): continue
        lengths.append(_lines(src))
        nxt = code[i + 1] if i + 1 < len(code) else ""
        if not _is_export(nxt) and TEST_CALL.search(nxt): followed += 1
    return lengths, followed


def chapter_order() -> dict[str, int]:
    "module name -> its notebook's position in the book."
    order = {}
    for py in PKG.glob("*.py"):
        m = re.search(r"File to edit: \.\./nbs/(.+?)\.ipynb", py.read_text())
        if m: order[py.stem] = m.group(1)
    ranked = sorted(set(order.values()))
    return {mod: ranked.index(nb) for mod, nb in order.items()}


def _explained(lines: list[str], lineno: int) -> bool:
    "Does the import on line `lineno` (1-based) say why, or the block of imports it ends?"
    i = lineno - 1
    while i >= 0 and lines[i].strip().startswith(("from ", "import ")):
        if "#" in lines[i]: return True
        i -= 1
    return False


def package_imports(path: Path, modules: set[str]) -> list[tuple[str, bool, bool]]:
    """(module, inside a function, explained) for every import of a package module in `path`;
    an import is explained when a comment on its line, or on an import line right above it,
    says why it is there."""
    src = path.read_text()
    tree, found, lines = ast.parse(src), [], src.splitlines()

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names: list[str] = []
            if isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level == 1: base = f"stockstock.{base}" if base else "stockstock"
                if base == "stockstock": names = [f"stockstock.{a.name}" for a in child.names]
                elif base.startswith("stockstock."): names = [base]
            elif isinstance(child, ast.Import):
                names = [a.name for a in child.names if a.name.startswith("stockstock.")]
            for n in names:
                mod = n.split(".")[1]
                if mod in modules and mod != path.stem:
                    found.append((mod, inner, _explained(lines, child.lineno)))
            visit(child, inner)
    visit(tree, False)
    return found


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    "Strongly connected components with more than one module (Tarjan)."
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in sorted(graph):
        if v not in index: strong(v)
    return out


def import_report() -> dict:
    order = chapter_order()
    graph: dict[str, set[str]] = {}
    back, lazy = [], []
    for mod in sorted(order):
        for dep, nested, explained in package_imports(PKG / f"{mod}.py", set(order)):
            graph.setdefault(mod, set()).add(dep)
            if order[dep] > order[mod]: back.append((mod, dep))
            if nested: lazy.append((mod, dep, explained))
    return dict(circles=_circles(graph), back=sorted(set(back)), lazy=lazy)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()
    every, followed_all = [], 0
    print(f"{'notebook':<22} {'cells':>5} {'median':>6} {'max':>4} {'>30':>4} {'tested':>7}")
    for nb in sorted(NBS.glob("*.ipynb")):
        lengths, followed = notebook_cells(nb)
        if not lengths: continue
        every += lengths
        followed_all += followed
        print(f"{nb.stem:<22} {len(lengths):>5} {statistics.median(lengths):>6.1f} "
              f"{max(lengths):>4} {sum(n > TARGET_MAX for n in lengths):>4} "
              f"{followed / len(lengths):>7.0%}")
    median, share = statistics.median(every), followed_all / len(every)
    over = sum(n > TARGET_MAX for n in every)
    print(f"{'all':<22} {len(every):>5} {median:>6.1f} {max(every):>4} {over:>4} {share:>7.0%}")
    rep = import_report()
    print(f"\nimport circles: {rep['circles'] or 'none'}")
    print(f"back-arrows (a module importing a later chapter): {len(rep['back'])}")
    for mod, dep in rep["back"]: print(f"  {mod} -> {dep}")
    print(f"package imports inside functions: {len(rep['lazy'])}")
    by_module = Counter(mod for mod, _, _ in rep["lazy"])
    if by_module: print("  by module: " + ", ".join(f"{m} {n}" for m, n in by_module.most_common()))
    silent = [(m, d) for m, d, why in rep["lazy"] if not why]
    print(f"  without a comment saying why: {len(silent)}")
    for mod, dep in silent: print(f"    {mod} -> {dep}")
    missed = [m for m, bad in [(f"median {median} > {TARGET_MEDIAN}", median > TARGET_MEDIAN),
                               (f"tested {share:.0%} < {TARGET_FOLLOWED:.0%}",
                                share < TARGET_FOLLOWED),
                               ("import circles", bool(rep["circles"])),
                               ("back-arrows", bool(rep["back"]))] if bad]
    if missed: print("targets missed: " + "; ".join(missed))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
