"""Student copies (notebooks/student/) and their generator, in scripts/build_notebooks.py.

- the committed copies equal freshly generated ones (else: run `python scripts/build_notebooks.py --students`);
- the transformation on a small hand-made notebook: regions replaced at the markers' indentation, outputs of
  solution cells removed, lesson outputs kept, tagged markdown replaced, a header on top, stable bytes;
- unbalanced markers are refused with a message naming the cell;
- no solution text is left in any committed student copy, and every student exercise cell runs and reports
  "not yet" through its checker;
- every checker in grpo_lib.course.exercises.ex0N answers the student placeholder with a falsy "not yet" and never raises.

Running the student copies top to bottom is nbmake's job: `pytest --nbmake notebooks` recurses into
notebooks/student/ (CI does this).
"""
import contextlib
import importlib
import importlib.util
import inspect
import io
import pkgutil
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import grpo_lib.course.exercises
from grpo_lib.course.exercises.checking import CheckResult

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("build_notebooks", REPO / "scripts" / "build_notebooks.py")
gen = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gen)

INSTRUCTOR = sorted((REPO / "notebooks").glob("0*.ipynb"))


def _tagged(cell, tag="solution"):
    cell.metadata["tags"] = [tag]
    return cell


def _hand_made() -> nbformat.NotebookNode:
    lesson = new_code_cell("x = 1 + 1\nx", execution_count=3,
                           outputs=[new_output("execute_result", {"text/plain": "2"}, execution_count=3)])
    heading = new_markdown_cell("## Exercises\n\n**7.3 · Something (fill in).** Write `f`.")
    exercise = _tagged(new_code_cell(
        "import math\n"
        "def f(x):\n"
        "    ### BEGIN SOLUTION\n"
        "    y = x * 2\n"
        "    return y\n"
        "    ### END SOLUTION\n"
        "\n"
        "class K:\n"
        "    def g(self):\n"
        "        ### BEGIN SOLUTION\n"
        "        return 42\n"
        "        ### END SOLUTION\n"
        "\n"
        "check(f)", execution_count=4,
        outputs=[new_output("stream", name="stdout", text="✓ Correct\n")]))
    written = _tagged(new_markdown_cell("Because the group mean is the baseline."))
    untitled = _tagged(new_code_cell("def h():\n    ### BEGIN SOLUTION\n    return 0\n    ### END SOLUTION"))
    nb = new_notebook(cells=[lesson, heading, exercise, written, new_markdown_cell("No heading here."), untitled])
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{i}"
    return nb


def test_transformation_on_a_hand_made_notebook():
    nb = _hand_made()
    before = nbformat.writes(nb)
    student = gen.student_notebook(nb, "07_example.ipynb")
    assert nbformat.writes(nb) == before                                     # the instructor copy is untouched
    header, lesson, heading, exercise, written, plain, untitled = student.cells
    assert header.cell_type == "markdown" and header.id == gen.HEADER_ID
    assert "Student copy" in header.source and "notebooks/07_example.ipynb" in header.source
    assert "build_notebooks.py" in header.source and "✗ Not yet" in header.source
    assert "The fill-in exercise (7.3) is blank" in header.source     # both cells are exercise 7.3
    assert lesson == nb.cells[0]                                             # lesson: outputs, count, id kept
    assert heading == nb.cells[1] and plain == nb.cells[4]
    assert exercise.source == (
        "import math\n"
        "def f(x):\n"
        "    # YOUR CODE HERE\n"
        '    raise NotImplementedError("Exercise 7.3")\n'
        "\n"
        "class K:\n"
        "    def g(self):\n"
        "        # YOUR CODE HERE\n"
        '        raise NotImplementedError("Exercise 7.3")\n'
        "\n"
        "check(f)")
    assert exercise.outputs == [] and exercise.execution_count is None
    assert exercise.metadata["tags"] == ["solution"] and exercise.id == "c2"
    assert written.source == "*Your answer here.*"
    assert untitled.source.endswith('raise NotImplementedError("Exercise 7.3")')  # last heading still applies
    nbformat.validate(student)


def test_exercise_number_falls_back_to_the_notebook_number_and_a_count():
    cells = [_tagged(new_code_cell(f"def f{i}():\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION"))
             for i in range(2)]
    student = gen.student_notebook(new_notebook(cells=cells), "05_full_run.ipynb")
    assert 'NotImplementedError("Exercise 5.1")' in student.cells[1].source
    assert 'NotImplementedError("Exercise 5.2")' in student.cells[2].source
    assert "The fill-in exercises (5.1, 5.2) are blank" in student.cells[0].source
    no_exercise = gen.student_notebook(new_notebook(cells=[new_markdown_cell("# Lesson only")]), "06_x.ipynb")
    assert "no fill-in exercise yet" in no_exercise.cells[0].source


def test_rendering_is_deterministic(tmp_path):
    path = tmp_path / "07_example.ipynb"
    nbformat.write(_hand_made(), path)
    first, second = gen.render_student(path), gen.render_student(path)
    assert first == second and first.endswith("\n")
    assert '"id": "student-copy-header"' in first


@pytest.mark.parametrize("source, message", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1", "never closed"),
    ("def f():\n    return 1\n    ### END SOLUTION", "without a '### BEGIN SOLUTION'"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "opens a second"),
    ("def f():\n    return 1", "has no '### BEGIN SOLUTION'"),
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n### END SOLUTION", "indented differently"),
])
def test_unbalanced_markers_are_refused(source, message):
    nb = new_notebook(cells=[_tagged(new_code_cell(source))])
    nb.cells[0].id = "broken"
    with pytest.raises(gen.SolutionMarkerError, match=re.escape(message)) as err:
        gen.student_notebook(nb, "09_x.ipynb")
    assert "notebooks/09_x.ipynb, cell 0 (id broken)" in str(err.value)


def test_markers_outside_a_solution_cell_are_refused():
    nb = new_notebook(cells=[new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")])
    with pytest.raises(gen.SolutionMarkerError, match="not tagged 'solution'"):
        gen.student_notebook(nb, "09_x.ipynb")


def test_command_line_writes_checks_and_refuses(tmp_path, monkeypatch, capsys):
    instructor, student = tmp_path / "notebooks", tmp_path / "notebooks" / "student"
    instructor.mkdir()
    nbformat.write(_hand_made(), instructor / "07_example.ipynb")
    monkeypatch.setattr(gen, "REPO", tmp_path)
    monkeypatch.setattr(gen, "NOTEBOOKS", instructor)
    monkeypatch.setattr(gen, "SOURCES", instructor / "src")          # no sources: --check looks at students only
    monkeypatch.setattr(gen, "STUDENTS", student)
    monkeypatch.setattr(gen, "out_of_sync", lambda: [])
    assert gen.main(["--check"]) == 1
    assert "notebooks/student/07_example.ipynb (missing)" in capsys.readouterr().err
    assert gen.main(["--students"]) == 0
    written = (student / "07_example.ipynb").read_bytes()
    assert "notebooks/src/07_example.py" in written.decode()           # the header names the source to edit
    assert gen.main(["--check"]) == 0
    assert gen.main(["--students"]) == 0 and (student / "07_example.ipynb").read_bytes() == written
    edited = _hand_made()
    edited.cells[0].source = "x = 2 + 2\nx"
    nbformat.write(edited, instructor / "07_example.ipynb")
    capsys.readouterr()
    assert gen.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "07_example.ipynb (out of date" in err and "python scripts/build_notebooks.py --students" in err
    broken = new_notebook(cells=[_tagged(new_code_cell("### BEGIN SOLUTION\nx = 1"))])
    nbformat.write(broken, instructor / "08_broken.ipynb")
    assert gen.main(["--students"]) == 2
    assert "08_broken.ipynb" in capsys.readouterr().err
    assert (student / "07_example.ipynb").read_bytes() == written      # nothing was half-written


# --- the committed student copies -------------------------------------------------------------------


def test_committed_student_copies_are_current():
    stale = gen.stale_student_copies()
    assert not stale, ("student copies are out of date with the instructor notebooks:\n  " + "\n  ".join(stale)
                       + "\nRun: python scripts/build_notebooks.py --students")


def _solution_lines(nb) -> set[str]:
    """Lines strictly inside BEGIN/END regions that appear in no lesson cell (a lesson line may repeat them)."""
    lesson = {line.strip() for cell in nb.cells if not gen.is_solution(cell) for line in cell.source.split("\n")}
    inside, found = False, set()
    for cell in nb.cells:
        if not gen.is_solution(cell) or cell.cell_type != "code":
            continue
        for line in cell.source.split("\n"):
            if line.strip() == gen.BEGIN:
                inside = True
            elif line.strip() == gen.END:
                inside = False
            elif inside and line.strip() and line.strip() not in lesson:
                found.add(line.strip())
    return found


@pytest.mark.parametrize("path", INSTRUCTOR, ids=lambda p: p.name)
def test_no_solution_text_left_in_the_student_copy(path):
    instructor = nbformat.read(path, as_version=4)
    student_path = REPO / "notebooks" / "student" / path.name
    assert student_path.is_file(), "run: python scripts/build_notebooks.py --students"
    student = nbformat.read(student_path, as_version=4)
    text = student_path.read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    secrets = _solution_lines(instructor)
    student_lines = {line.strip() for cell in student.cells for line in cell.source.split("\n")}
    assert not secrets & student_lines, secrets & student_lines
    for cell in student.cells:
        if gen.is_solution(cell) and cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
            assert re.search(r'raise NotImplementedError\("Exercise \d+\.\d+"\)', cell.source)
    # a lesson cell keeps its outputs: as many outputs as the instructor's copy
    lesson_outputs = [len(c.outputs) for c in instructor.cells if c.cell_type == "code" and not gen.is_solution(c)]
    student_outputs = [len(c.outputs) for c in student.cells if c.cell_type == "code" and not gen.is_solution(c)]
    assert student_outputs == lesson_outputs


def _exercise_cells():
    for path in sorted((REPO / "notebooks" / "student").glob("0*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        imports = next(c.source for c in nb.cells if c.cell_type == "code")
        for cell in nb.cells:
            if gen.is_solution(cell) and cell.cell_type == "code":
                yield pytest.param(imports, cell.source, id=f"{path.name}:{cell.id}")


@pytest.mark.parametrize("imports, source", list(_exercise_cells()))
def test_each_student_exercise_cell_runs_and_reports_not_yet(imports, source):
    """Run the notebook's import cell, then the blank exercise cell: its checker prints "not yet", nothing raises."""
    namespace: dict = {}
    exec("\n".join(line for line in imports.split("\n") if not line.startswith("%")), namespace)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(source, namespace)
    exercise = re.search(r'NotImplementedError\("Exercise (\d+\.\d+)"\)', source).group(1)
    assert f"✗ Not yet: Exercise {exercise} is not filled in yet." in out.getvalue(), out.getvalue()
    assert "Hint:" in out.getvalue()


def _all_checkers():
    for info in pkgutil.iter_modules(grpo_lib.course.exercises.__path__):
        if info.name.startswith("ex"):
            module = importlib.import_module(f"grpo_lib.course.exercises.{info.name}")
            for name, fn in inspect.getmembers(module, inspect.isfunction):
                if name.startswith("check_") and fn.__module__ == module.__name__:
                    yield pytest.param(fn, id=f"{info.name}.{name}")


@pytest.mark.parametrize("check", list(_all_checkers()))
def test_every_checker_says_not_yet_to_the_student_placeholder(check, capsys):
    def placeholder(*args, **kwargs):
        # YOUR CODE HERE
        raise NotImplementedError("Exercise 9.9")
    result = check(placeholder)
    out = capsys.readouterr().out
    assert isinstance(result, CheckResult) and not result
    assert re.match(r"✗ Not yet: Exercise \d+\.\d+ is not filled in yet\.", out), out
    assert "Hint:" in out


def _instructor_solution_cells():
    for path in INSTRUCTOR:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if gen.is_solution(cell) and cell.cell_type == "code":
                yield pytest.param(cell.source, id=f"{path.name}:{cell.id}")


@pytest.mark.parametrize("source", list(_instructor_solution_cells()))
def test_every_exercise_calls_a_checker_that_has_tests(source):
    """Each fill-in exercise ends with a call to a grpo_lib.course.exercises checker, and some tests/ file tests it."""
    names = {fn.values[0].__name__ for fn in _all_checkers()}
    called = set(re.findall(r"\b(check_\w+)\(", source)) & names
    assert called, f"no grpo_lib.course.exercises checker is called in:\n{source}"
    tests_text = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "tests").glob("test_*.py")
                           if p.name != "test_student_notebooks.py")
    for name in called:
        assert re.search(rf"\b{name}\(", tests_text), f"{name} has no test in tests/"
