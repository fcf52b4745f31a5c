"""Run All on a student copy shows no answer.

For each notebook, the text a learner sees after running the student copy top to bottom, that is the
committed lesson outputs plus what each blank exercise cell prints when it runs (executed here: the notebook's
import cell, then the exercise cell), must contain no line of any reference solution (from the instructor
notebook's solution regions) and no exercise's key step (the formula `hint("N.K")` shows on request).
Executing the whole notebook is nbmake's job in CI; the lesson cells do not depend on the exercises, so their
committed outputs are what a run shows.
"""
import contextlib
import io
import re
from pathlib import Path

import nbformat
import pytest

from grpo_lib.course.exercises.checking import KEY_STEPS

REPO = Path(__file__).resolve().parents[1]
INSTRUCTOR = sorted((REPO / "notebooks").glob("0*.ipynb"))


def _is_solution(cell) -> bool:
    return cell.cell_type == "code" and "solution" in cell.get("metadata", {}).get("tags", [])


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _solution_lines(nb) -> set[str]:
    """Each non-trivial line between the markers, comments dropped, whitespace removed."""
    lines = set()
    for cell in filter(_is_solution, nb.cells):
        inside = False
        for line in cell.source.split("\n"):
            if "### BEGIN SOLUTION" in line:
                inside = True
            elif "### END SOLUTION" in line:
                inside = False
            elif inside:
                code = _norm(line.split("#")[0])
                if len(code) >= 12:                       # "return x" and the like say nothing
                    lines.add(code)
    return lines


def _outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append("".join(out.get("text", "")))
        for key, value in out.get("data", {}).items():
            if key.startswith("text/"):
                parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


def _run_blank_exercises(student) -> str:
    imports = next(c.source for c in student.cells if c.cell_type == "code")
    namespace: dict = {}
    exec("\n".join(line for line in imports.split("\n") if not line.lstrip().startswith("%")), namespace)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for cell in filter(_is_solution, student.cells):
            exec(cell.source, namespace)
    return printed.getvalue()


@pytest.mark.parametrize("path", INSTRUCTOR, ids=lambda p: p.name)
def test_running_a_student_copy_shows_no_answer(path):
    instructor = nbformat.read(path, as_version=4)
    student = nbformat.read(REPO / "notebooks" / "student" / path.name, as_version=4)
    printed = _run_blank_exercises(student)
    exercises = re.findall(r'NotImplementedError\("Exercise (\d+\.\d+)"\)', "\n".join(c.source for c in student.cells))
    assert exercises, f"{path.name} has no blank exercise"
    for exercise in exercises:
        assert f"✗ Not yet: Exercise {exercise} is not filled in yet." in printed, printed
    shown = _norm("\n".join(_outputs_text(c) for c in student.cells) + "\n" + printed)
    leaked = {line for line in _solution_lines(instructor) if line in shown}
    assert not leaked, f"{path.name}: a reference solution shows in the outputs: {sorted(leaked)}"
    keys = {ex: KEY_STEPS[ex][1] for ex in exercises if ex in KEY_STEPS}
    leaked_keys = {ex for ex, key in keys.items() if _norm(key) in shown}
    assert not leaked_keys, f"{path.name}: the key step of exercise(s) {sorted(leaked_keys)} shows on Run All"


def test_the_check_catches_a_leak(tmp_path):
    """The same comparison flags a printed solution line: the test above can fail."""
    solution = nbformat.v4.new_code_cell("def f(r):\n    ### BEGIN SOLUTION\n    return r - (r.sum() - r) / (len(r) - 1)\n"
                                         "    ### END SOLUTION\n", metadata={"tags": ["solution"]})
    nb = nbformat.v4.new_notebook(cells=[solution])
    secrets = _solution_lines(nb)
    assert secrets == {_norm("return r - (r.sum() - r) / (len(r) - 1)")}
    assert any(s in _norm("Hint: return r - (r.sum() - r) / (len(r) - 1)") for s in secrets)
