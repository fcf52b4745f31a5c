"""The package layout: the engine and the GRPO math (grpo_lib/*.py) never import the course wing
(grpo_lib/course/), read from every module's source with `ast` (imports inside functions count too)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "grpo_lib"
ENGINE = sorted(PACKAGE.glob("*.py"))


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
    assert {"train.py", "loss.py", "advantages.py", "cli.py", "runlog.py"} <= {p.name for p in ENGINE}


@pytest.mark.parametrize("path", ENGINE, ids=lambda p: p.name)
def test_engine_never_imports_the_course_wing(path):
    course = sorted(m for m in imported_modules(path) if m == "grpo_lib.course" or m.startswith("grpo_lib.course."))
    assert not course, f"grpo_lib/{path.name} imports {course}: the engine must not depend on grpo_lib/course/"


def test_the_scan_sees_every_kind_of_import(tmp_path):
    """The checker itself: absolute, from-package, relative and function-level imports are all caught."""
    for source in ("import grpo_lib.course.plots", "from grpo_lib.course import plots",
                   "from grpo_lib import course", "from .course.memory import GIB",
                   "def f():\n    from grpo_lib.course.exercises.ex01 import check_loo_advantages"):
        path = tmp_path / "m.py"
        path.write_text(source)
        assert any(m.startswith("grpo_lib.course") for m in imported_modules(path)), source
    (tmp_path / "m.py").write_text("from grpo_lib import loss\nimport grpo_lib.train")
    assert not any(m.startswith("grpo_lib.course") for m in imported_modules(tmp_path / "m.py"))
