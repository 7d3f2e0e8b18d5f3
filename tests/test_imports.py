"""Import direction: packages follow layers, and no import cycle exists.

Every import counts (top-level, ``TYPE_CHECKING`` and function-local), because a cycle that only
shows at run time, or only to the type checker, still ties two modules together.  The layers,
bottom to top, are :data:`LAYERS`; a module may import its own package and any package below it.
``vmci.core`` imports nothing from vmci except ``vmci.errors``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vmci"

#: Bottom to top.  Packages on one line are peers: they must not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("core",),
    ("layouts",),
    ("arch",),
    ("machine",),
    ("formats",),
    ("firmware",),
    ("kernel",),
    ("discover",),
    ("analysis",),
    ("convert", "fleet", "producer"),
    ("integrations",),
    ("testing",),
    ("cli",),
]
RANK = {pkg: i for i, names in enumerate(LAYERS) for pkg in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every vmci module ``name`` imports, resolved to the longest known module name."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, *([base] if base else [])])
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith("vmci"):
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_every_package_has_a_layer() -> None:
    unknown = {p for m in modules() if (p := package_of(m)) is not None and p not in RANK}
    assert not unknown, f"add {sorted(unknown)} to LAYERS in {__file__}"


def test_dependencies_point_down() -> None:
    wrong = []
    for mod, deps in graph().items():
        src = package_of(mod)
        if src is None:  # vmci/__init__.py: the lazy facade may name anything
            continue
        for dep in deps:
            dst = package_of(dep)
            if dst is None or dst == src:
                continue
            if src == "core" and dst != "errors":
                wrong.append(f"{mod} -> {dep} (core imports only vmci.errors)")
            elif RANK[dst] >= RANK[src]:
                wrong.append(f"{mod} -> {dep}")
    assert not wrong, "imports pointing up or sideways:\n" + "\n".join(sorted(wrong))


def test_top_level_holds_packages_only() -> None:
    loose = sorted(p.name for p in ROOT.glob("*.py") if p.name not in ("__init__.py", "errors.py"))
    assert not loose, f"vmci/ top level holds packages, __init__ and errors only: {loose}"


@pytest.mark.parametrize(("src", "expected"), [
    ("import a.b\nfrom .c import d\n", {"vmci.x.c", "vmci.x.c.d"}),
])
def test_resolver_sees_relative_and_local_imports(tmp_path: Path, src: str, expected: set[str]) -> None:
    p = tmp_path / "m.py"
    p.write_text("def f():\n    " + src.replace("\n", "\n    "))
    known = {"vmci.x.m", "vmci.x.c", "vmci.x.c.d"}
    assert imports_of("vmci.x.m", p, known) == expected


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
