"""Generate the student copies notebooks/student/0N_*.ipynb from the instructor notebooks notebooks/0N_*.ipynb.

    python scripts/make_student_notebooks.py           # (re)write every student copy
    python scripts/make_student_notebooks.py --check   # exit 1 and list the student copies that are out of date

The instructor notebooks hold the reference solutions (the exercise convention, docs/teaching.md):

- a code cell a student fills in carries the tag "solution", and its answer sits between a line
  `### BEGIN SOLUTION` and a line `### END SOLUTION`. The student copy replaces each such region, at the
  markers' indentation, by

      # YOUR CODE HERE
      raise NotImplementedError("Exercise N.K")

  and removes the cell's outputs and execution count; the checker call after the function (same cell) then
  prints "✗ Not yet: Exercise N.K is not filled in yet" with a hint, and the notebook runs on;
- a markdown cell tagged "solution" (a written answer) becomes "*Your answer here.*";
- every other cell (the lesson) is copied as it is, outputs included, so the student copy reads like the
  instructor's notebook without re-executing anything.

N.K is the number of the exercise heading (`**N.K · title**`) in the last markdown cell before the solution
cell, or, without one, the notebook's number and a running count. A solution cell with unbalanced markers (or
none), or markers outside a solution cell, stops the generator with a message naming the notebook and cell.

The output is deterministic (cell ids are the instructor's, the header's id is fixed, nbformat writes sorted
keys), so regenerating twice gives identical bytes; tests/test_student_notebooks.py runs `--check`.

Regenerate after every `python scripts/make_notebook_0N.py --execute`.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
INSTRUCTOR_DIR = REPO / "notebooks"
STUDENT_DIR = INSTRUCTOR_DIR / "student"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
SOLUTION_TAG = "solution"
ANSWER_PLACEHOLDER = "*Your answer here.*"
HEADER_ID = "student-copy-header"
EXERCISE_HEADING = re.compile(r"\*\*(\d+\.\d+)\s*·")

HEADER = """\
> **Student copy.** {exercises} each says `raise NotImplementedError(...)`
> where your code goes. Replace those two lines with your answer and run the cell: the checker under your
> function prints **✓ Correct** or **✗ Not yet** with the case that failed, the value it expected, the value it
> got, and a hint. Until you fill an exercise in, its checker says "not yet" and the rest of the notebook still
> runs. The lesson cells above keep their outputs, so you can read first and run later.
>
> *For maintainers: generated from `notebooks/{name}` by `python scripts/make_student_notebooks.py`; edit
> the instructor notebook's script (`scripts/make_notebook_{number}.py`), not this file.*"""


class SolutionMarkerError(ValueError):
    """A solution cell whose ### BEGIN SOLUTION / ### END SOLUTION markers do not pair up."""


def is_solution(cell: nbformat.NotebookNode) -> bool:
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def strip_solution(source: str, exercise: str, where: str = "a solution cell") -> str:
    """Replace each ### BEGIN SOLUTION ... ### END SOLUTION region by the placeholder, at the markers' indentation.

    Args:
        source: the cell's code.
        exercise: "N.K", written into the placeholder's NotImplementedError.
        where: names the cell in error messages ("notebooks/02_advantages.ipynb, cell cell-45").

    Raises:
        SolutionMarkerError: no markers, END before BEGIN, BEGIN inside a region, a region left open, or the two
            markers of one region at different indentations.
    """
    out: list[str] = []
    begin_indent: str | None = None
    regions = 0
    for number, line in enumerate(source.split("\n"), start=1):
        marker = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if marker == BEGIN:
            if begin_indent is not None:
                raise SolutionMarkerError(f"{where}: line {number} opens a second '{BEGIN}' before '{END}'")
            begin_indent = indent
        elif marker == END:
            if begin_indent is None:
                raise SolutionMarkerError(f"{where}: line {number} has '{END}' without a '{BEGIN}' before it")
            if indent != begin_indent:
                raise SolutionMarkerError(f"{where}: line {number}: '{END}' is indented differently from its "
                                          f"'{BEGIN}'")
            out += [f"{indent}# YOUR CODE HERE", f'{indent}raise NotImplementedError("Exercise {exercise}")']
            begin_indent = None
            regions += 1
        elif begin_indent is None:
            out.append(line)
    if begin_indent is not None:
        raise SolutionMarkerError(f"{where}: '{BEGIN}' is never closed by '{END}'")
    if regions == 0:
        raise SolutionMarkerError(f"{where} is tagged '{SOLUTION_TAG}' but has no '{BEGIN}' / '{END}' lines")
    return "\n".join(out)


def student_notebook(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The student copy of instructor notebook `nb` (file name `name`, e.g. "02_advantages.ipynb")."""
    nb = copy.deepcopy(nb)
    number = name[:2]
    exercise, count = None, 0
    numbers: list[str] = []                                   # the exercises' N.K, in order
    cells = []
    for i, cell in enumerate(nb.cells):
        cell.setdefault("id", f"cell-{i:03d}")                # ids are kept; a missing one is made stable
        where = f"notebooks/{name}, cell {i} (id {cell['id']})"
        source = cell.source
        if cell.cell_type == "markdown" and not is_solution(cell):
            headings = EXERCISE_HEADING.findall(source)
            if headings:
                exercise = headings[-1]
        if is_solution(cell):
            if cell.cell_type == "code":
                count += 1
                label = exercise or f"{int(number)}.{count}"
                cell.source = strip_solution(source, label, where)
                if label not in numbers:
                    numbers.append(label)
                cell.outputs = []
                cell.execution_count = None
            elif cell.cell_type == "markdown":
                cell.source = ANSWER_PLACEHOLDER
        elif BEGIN in source or END in source:
            raise SolutionMarkerError(f"{where} holds solution markers but is not tagged '{SOLUTION_TAG}'")
        cells.append(cell)
    if numbers:
        listed = ", ".join(numbers)
        plural = len(numbers) > 1
        exercises = f"The fill-in exercise{'s' if plural else ''} ({listed}) {'are' if plural else 'is'} blank:"
    else:
        exercises = "This notebook has no fill-in exercise yet; in the ones of the other notebooks"
    header = nbformat.v4.new_markdown_cell(HEADER.format(name=name, number=number, exercises=exercises))
    header.id = HEADER_ID
    nb.cells = [header, *cells]
    return nb


def instructor_notebooks() -> list[Path]:
    return sorted(INSTRUCTOR_DIR.glob("0*.ipynb"))


def render(path: Path) -> str:
    """The exact text the student copy of instructor notebook `path` is written as."""
    nb = student_notebook(nbformat.read(path, as_version=4), path.name)
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def stale_files(student_dir: Path | None = None) -> list[str]:
    """Student copies that are missing, differ from a fresh render, or have no instructor notebook."""
    student_dir = STUDENT_DIR if student_dir is None else student_dir
    stale = []
    expected = {}
    for path in instructor_notebooks():
        expected[path.name] = render(path)
    for name, text in expected.items():
        target = student_dir / name
        if not target.is_file():
            stale.append(f"{target.relative_to(REPO)} (missing)")
        elif target.read_text(encoding="utf-8") != text:
            stale.append(f"{target.relative_to(REPO)} (out of date with notebooks/{name})")
    for target in sorted(student_dir.glob("*.ipynb")):
        if target.name not in expected:
            stale.append(f"{target.relative_to(REPO)} (no instructor notebook notebooks/{target.name})")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing the student copies that are out of date")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = stale_files()
            if stale:
                print("Student copies out of date:\n  " + "\n  ".join(stale)
                      + "\nRun: python scripts/make_student_notebooks.py", file=sys.stderr)
                return 1
            print(f"student copies up to date ({len(instructor_notebooks())} notebooks)")
            return 0
        STUDENT_DIR.mkdir(parents=True, exist_ok=True)
        for path in instructor_notebooks():
            text = render(path)
            target = STUDENT_DIR / path.name
            changed = not target.is_file() or target.read_text(encoding="utf-8") != text
            target.write_text(text, encoding="utf-8")
            print(f"{'wrote' if changed else 'unchanged'} {target.relative_to(REPO)}")
        for target in sorted(STUDENT_DIR.glob("*.ipynb")):
            if not (INSTRUCTOR_DIR / target.name).is_file():
                target.unlink()
                print(f"removed {target.relative_to(REPO)} (its instructor notebook is gone)")
    except SolutionMarkerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
