"""The package layout, read from every module's source with `ast` (imports inside functions count too): the engine
and the GRPO math (grpo_lib/*.py, grpo_lib/run/, grpo_lib/trl/) never import the course wing (grpo_lib/course/);
no import cycle anywhere in grpo_lib; the algorithm (train.py) never imports its command line (cli.py), and the
run's rooms (grpo_lib/run/) import neither; what the command line reads before importing torch imports only the
standard library."""
import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "grpo_lib"
ENGINE = sorted([*PACKAGE.glob("*.py"), *PACKAGE.glob("run/*.py"), *PACKAGE.glob("trl/*.py")])


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` in the file names, resolved to an absolute name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                                  # relative import: from .course import x
                base = ".".join(["grpo_lib"] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_the_engine_modules_are_found():
    names = {str(p.relative_to(PACKAGE)) for p in ENGINE}
    assert {"train.py", "loss.py", "advantages.py", "cli.py", "__main__.py", "run/runlog.py", "run/lifecycle.py",
            "run/layout.py", "trl/recipe.py"} <= names
    assert not any(name.startswith("course/") for name in names)


@pytest.mark.parametrize("path", ENGINE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_engine_never_imports_the_course_wing(path):
    course = sorted(m for m in imported_modules(path) if m == "grpo_lib.course" or m.startswith("grpo_lib.course."))
    assert not course, f"grpo_lib/{path.relative_to(PACKAGE)} imports {course}: the engine must not depend on grpo_lib/course/"


def module_name(path: Path, root: Path) -> str:
    """grpo_lib/run/layout.py -> grpo_lib.run.layout; grpo_lib/run/__init__.py -> grpo_lib.run."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in the file), for every .py file under `root`.

    `from grpo_lib.run import checkpoint` is an arrow to grpo_lib.run.checkpoint; an import of a name inside a
    module is an arrow to that module. Arrows to the top package (its __init__ imports nothing) are left out."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        arrows = set()
        for imported in imported_modules(path):
            while imported and imported not in modules:        # grpo_lib.run.checkpoint.Checkpoint -> the module
                imported = imported.rpartition(".")[0]
            if imported and imported not in (name, root.name):
                arrows.add(imported)
        graph[name] = arrows
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when the graph has none (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_grpo_lib_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert {"grpo_lib.train", "grpo_lib.run.lifecycle", "grpo_lib.course.plots"} <= set(graph)
    assert "grpo_lib.run.lifecycle" in graph["grpo_lib.train"]          # the scan sees the arrows it must
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from pkg.c import g\n")
    (pkg / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(pkg)) == []
    (pkg / "c.py").write_text("from pkg.a import x\n")                 # a -> sub.b -> c -> a
    assert find_cycle(import_graph(pkg)) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]


def test_the_algorithm_never_imports_its_command_line_and_the_run_neither():
    """train.py is the algorithm: the command line (cli.py, __main__.py) imports it, never the other way; the
    run's rooms (grpo_lib/run/) sit below the algorithm: they import neither train nor cli."""
    graph = import_graph(PACKAGE)
    assert not {"grpo_lib.cli", "grpo_lib.__main__"} & graph["grpo_lib.train"]
    for name, arrows in graph.items():
        if name.startswith("grpo_lib.run"):
            assert not {"grpo_lib.train", "grpo_lib.cli", "grpo_lib.__main__"} & arrows, name


@pytest.mark.parametrize("rel", ["run/__init__.py", "run/layout.py", "run/rundir.py", "trl/__init__.py",
                                 "trl_recipe.py", "__main__.py"])
def test_what_the_command_line_reads_before_torch_imports_only_the_standard_library(rel):
    """The early lock (grpo_lib.run.rundir choice 4) is taken before torch is imported: the modules it loads (the
    packages above it included) import nothing but the standard library; __main__.py imports the rest after it."""
    path = PACKAGE / rel
    tree = ast.parse(path.read_text(encoding="utf-8"))
    before_lock = tree.body
    if rel == "__main__.py":                               # up to the lock call, then anything
        calls = [i for i, node in enumerate(tree.body) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                 and getattr(node.value.func, "id", "") == "lock_output_dir_at_start"]
        assert calls, "__main__.py must call lock_output_dir_at_start() before its other imports"
        before_lock = tree.body[:calls[0]]
    names = set()
    for node in before_lock:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                names.update(a.name for a in sub.names)
            elif isinstance(sub, ast.ImportFrom):
                names.add(sub.module or "")
    outside = {m.split(".")[0] for m in names} - set(sys.stdlib_module_names) - {"__future__", "grpo_lib"}
    assert not outside, f"grpo_lib/{rel} imports {sorted(outside)} before the lock"
    inner = {m for m in names if m.startswith("grpo_lib")} - {"grpo_lib.run.layout", "grpo_lib.run.rundir"}
    assert not inner, f"grpo_lib/{rel} imports {sorted(inner)} before the lock"
