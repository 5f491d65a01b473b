"""The import picture of the `marketdata` package, read from its source with `ast` (nothing is
imported): which module imports which, counting module-level imports and lazy imports inside
functions alike, since a lazy import is still an arrow a reader has to follow. Imports under
``if TYPE_CHECKING:`` are left out: they never run and only name a type for an annotation.
``importlib.import_module`` with a computed name (the venue registries) is not seen.

Checked here: only the Dagster layer (``defs/``, ``definitions.py``) and the tools that drive Dagster
(``bench/``) import dagster; the library imports neither the Dagster layer nor the tools; the venue
protocol (``venues/``) and the tick vocabulary (``tick.py``, ``stream.py``) import nothing from the
runtime above them; and no import circle exists among marketdata modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "marketdata"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE      # the package beside this test (a worktree's own)

# Where dagster may be imported: the Dagster layer, and the tools that drive a Dagster instance.
DAGSTER_LAYER = ("marketdata.defs", "marketdata.definitions")
TOOLS = ("marketdata.bench",)
# The command line dispatches to every part, the tools included; nothing below it imports it.
ENTRY = ("marketdata.cli",)
# The bottom layers: the venue protocol and the tick vocabulary.
BOTTOM = ("marketdata.venues", "marketdata.tick", "marketdata.stream")
ABOVE_BOTTOM = ("marketdata.ingest", "marketdata.persist", "marketdata.backfill", "marketdata.bars",
                "marketdata.defs", "marketdata.definitions", "marketdata.bench", "marketdata.config",
                "marketdata.cli")
# The settings file's reader sits below the runtime that it configures.
CONFIG = ("marketdata.config",)
RUNTIME = ("marketdata.ingest", "marketdata.persist", "marketdata.backfill", "marketdata.bars")

# Arrows that run back up the layers, allowed while they were being removed. Issue 14 step 1
# (venue-contract) removed the last of them: the book vocabulary moved to venues/book.py, the book
# registry joined the venue registry, and ConfigError moved below config.py and venues/ (errors.py).
# Each entry is (importer, imported); the test fails on an entry that no longer exists.
KNOWN_UPWARD_IMPORTS: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node of the tree except the bodies of ``if TYPE_CHECKING:`` (their else runs)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _imports(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(the marketdata modules ``name`` imports, the top-level names of everything it imports)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    internal: set[str] = set()
    tops: set[str] = set()

    def add(target: str) -> None:
        tops.add(target.split(".")[0])
        if target.split(".")[0] != PACKAGE:
            return
        while target and target not in known:             # `import marketdata.x.y` names module x.y
            target = target.rpartition(".")[0]
        if target and target != name:
            internal.add(target)

    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:                       # `from pkg import submodule` names the submodule
                sub = f"{base}.{alias.name}"
                add(sub if sub in known else base)
    return internal, tops


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    mods = _modules()
    known = set(mods)
    edges: dict[str, set[str]] = {}
    tops: dict[str, set[str]] = {}
    for name, path in mods.items():
        edges[name], tops[name] = _imports(name, path, known)
    return edges, tops


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
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
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _without_known(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {t for t in ts if (m, t) not in KNOWN_UPWARD_IMPORTS} for m, ts in edges.items()}


def test_the_reader_sees_every_module_and_resolves_relative_imports():
    edges, tops = _graph()
    assert "marketdata.definitions" in edges and "marketdata.venues.binance" in edges
    assert "marketdata.bench" in edges and "marketdata.bench.dagster_service" in edges
    # definitions.py: `from .defs import ...` and a module-level `import dagster`
    assert "dagster" in tops["marketdata.definitions"]
    assert any(_within(t, ("marketdata.defs",)) for t in edges["marketdata.definitions"])
    # a lazy in-function import counts: cli.py dispatches `bench` with one
    assert "marketdata.bench.platform" in edges["marketdata.cli"]
    # the cycle finder finds a planted circle
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_dagster_layer_and_the_tools_import_dagster():
    _, tops = _graph()
    wrong = sorted(m for m, t in tops.items() if "dagster" in t and not _within(m, DAGSTER_LAYER + TOOLS))
    assert wrong == [], f"the library below defs/ imports dagster: {wrong}"


def test_the_library_imports_neither_the_dagster_layer_nor_the_tools():
    edges, _ = _graph()
    upper = DAGSTER_LAYER + TOOLS
    wrong = sorted((m, t) for m, ts in edges.items() for t in ts
                   if _within(t, upper) and not _within(m, upper + ENTRY))
    assert wrong == [], f"library modules import the Dagster layer or the tools: {wrong}"
    wrong = sorted((m, t) for m, ts in edges.items() for t in ts if _within(t, ENTRY))
    assert wrong == [], f"modules import the command line: {wrong}"


def test_venues_and_the_tick_vocabulary_import_nothing_above_them():
    edges, _ = _graph()
    wrong = sorted((m, t) for m, ts in _without_known(edges).items() for t in ts
                   if _within(m, BOTTOM) and _within(t, ABOVE_BOTTOM))
    assert wrong == [], f"arrows running up from venues/, tick.py or stream.py: {wrong}"


def test_config_imports_nothing_from_the_runtime():
    edges, _ = _graph()
    wrong = sorted((m, t) for m, ts in _without_known(edges).items() for t in ts
                   if _within(m, CONFIG) and _within(t, RUNTIME))
    assert wrong == [], f"config.py imports the runtime it configures: {wrong}"


def test_no_import_circle():
    edges, _ = _graph()
    cycles = _cycles(_without_known(edges))
    assert cycles == [], f"import circles among marketdata modules: {cycles}"


def test_every_known_exception_still_exists():
    edges, _ = _graph()
    gone = sorted((m, t) for m, t in KNOWN_UPWARD_IMPORTS if t not in edges.get(m, ()))
    assert gone == [], f"these arrows are gone: remove them from KNOWN_UPWARD_IMPORTS: {gone}"
