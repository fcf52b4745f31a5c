"""Build the course notebooks from their sources: notebooks/src/<stem>.py -> notebooks/<stem>.ipynb (executed,
with outputs) -> notebooks/student/<stem>.ipynb (exercises blank).

    python scripts/build_notebooks.py               # execute every notebook, then regenerate the student copies
    python scripts/build_notebooks.py 04 05         # only these (number, stem or path), then the student copies
    python scripts/build_notebooks.py --check       # execute nothing: exit 1 listing each notebook that differs
                                                    # from its source and each stale student copy
    python scripts/build_notebooks.py --students    # only regenerate the student copies (no execution)

**Sources.** Each notebook's single source is a jupytext percent-format file, notebooks/src/<stem>.py: a code
cell starts at a line `# %%`, a markdown cell at `# %% [markdown]` (its lines commented with `# `), and a cell's
metadata sits on its marker line (`# %% tags=["solution"]`). Edit it in any editor, or open the paired
notebooks/<stem>.ipynb in JupyterLab (`bash scripts/dev.sh lab`): notebooks/jupytext.toml pairs the two, so
saving the notebook writes the source too.

**Instructor notebooks.** The build reads the source, gives each cell a stable id (`cell-00`, `cell-01`, ...:
its position), sets the python3 kernel, runs every cell top to bottom in a fresh kernel with notebooks/ as the
working directory (what nbmake and JupyterLab do), and writes the notebook with its outputs, so GitHub shows
every number and figure. Every notebook gets the same treatment: execution counts are kept (1, 2, ... in a
fresh kernel), and what changes from run to run without changing the content is removed: cell timings, the
Python version in the notebook metadata, the widget state and the widget-view outputs that point into it (a
static page cannot render a slider or a progress bar; the plain-text fallback stays). Rebuilding an unchanged
source gives the same file unless a number really changed. A notebook whose execution fails is not written:
the committed one stays as it was and the partial run goes to artifacts/notebooks/<stem>.partial.ipynb.

**Student copies** (the exercise convention, docs/teaching.md). A code cell a student fills in carries the tag
"solution", and its answer sits between a line `### BEGIN SOLUTION` and a line `### END SOLUTION`. The student
copy replaces each such region, at the markers' indentation, by

    # YOUR CODE HERE
    raise NotImplementedError("Exercise N.K")

and removes the cell's outputs and execution count; the checker call after the function (same cell) then prints
"✗ Not yet: Exercise N.K is not filled in yet" with a hint, and the notebook runs on. A markdown cell tagged
"solution" (a written answer) becomes "*Your answer here.*"; every other cell (the lesson) is copied as it is,
outputs included. N.K is the number of the exercise heading (`**N.K · title**`) in the last markdown cell
before the solution cell, or, without one, the notebook's number and a running count. A solution cell with
unbalanced markers (or none), or markers outside a solution cell, stops the build with a message naming the
notebook and cell. The student copies are derived from the committed instructor notebooks (no execution), and
deterministically, so regenerating twice gives identical bytes.

tests/test_notebook_sources.py and tests/test_student_notebooks.py run the same checks as `--check`.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
from pathlib import Path

import jupytext
import nbformat

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"          # instructor notebooks, committed with outputs
SOURCES = NOTEBOOKS / "src"             # their jupytext percent sources, the files one edits
STUDENTS = NOTEBOOKS / "student"        # generated student copies
PARTIAL = REPO / "artifacts" / "notebooks"   # where a failed execution leaves its partial outputs (git-ignored)

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
NOTEBOOK_METADATA = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# Cell metadata that is never part of a notebook's content: execution timings, UI state, and what jupytext
# records only to reproduce a text file's blank lines (jupytext leaves all of these out of the .py too).
VOLATILE_CELL_METADATA = {"execution", "ExecuteTime", "autoscroll", "collapsed", "scrolled", "trusted",
                          "lines_to_next_cell", "lines_to_end_of_cell_marker", "cell_marker"}
CELL_TIMEOUT = 900                      # seconds per cell (notebook 05's training cell is the longest)
# The notebooks run offline: no hub, no W&B server (what scripts/dev.sh exports); an explicit setting wins.
# offline, and no datasets progress bars: they appear only while the datasets cache is cold, so a notebook's
# outputs would depend on what ran before the build
OFFLINE_ENV = {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
SOLUTION_TAG = "solution"
ANSWER_PLACEHOLDER = "*Your answer here.*"
HEADER_ID = "student-copy-header"
EXERCISE_HEADING = re.compile(r"\*\*(\d+\.\d+)\s*·")
STUDENT_HEADER = """\
> **Student copy.** {exercises} each says `raise NotImplementedError(...)`
> where your code goes. Replace those two lines with your answer and run the cell: the checker under your
> function prints **✓ Correct** or **✗ Not yet** with the case that failed, the value it expected, the value it
> got, and a hint. Until you fill an exercise in, its checker says "not yet" and the rest of the notebook still
> runs. The lesson cells above keep their outputs, so you can read first and run later.
>
> *For maintainers: generated from `notebooks/{name}` by `python scripts/build_notebooks.py`; edit the
> notebook's source `notebooks/src/{stem}.py`, not this file.*"""


class SolutionMarkerError(ValueError):
    """A solution cell whose ### BEGIN SOLUTION / ### END SOLUTION markers do not pair up."""


class UnknownNotebookError(ValueError):
    """A notebook named on the command line that has no source in notebooks/src/."""


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------------------
# Sources -> instructor notebooks
# --------------------------------------------------------------------------------------------------------
def sources() -> list[Path]:
    """Every notebook source, notebooks/src/*.py, in order."""
    return sorted(SOURCES.glob("*.py"))


def notebook_path(source: Path) -> Path:
    """The instructor notebook built from `source`: notebooks/<stem>.ipynb."""
    return NOTEBOOKS / f"{source.stem}.ipynb"


def cell_id(index: int) -> str:
    """The stable id of the cell at `index` (no churn in the .ipynb when nothing moved)."""
    return f"cell-{index:02d}"


def notebook_from_source(source: Path) -> nbformat.NotebookNode:
    """The unexecuted notebook of `source`: its cells (type, text, metadata), stable ids, the python3 kernel."""
    text_nb = jupytext.read(source, fmt="py:percent")
    nb = nbformat.v4.new_notebook()
    nb.metadata = copy.deepcopy(NOTEBOOK_METADATA)
    new_cell = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
                "raw": nbformat.v4.new_raw_cell}
    for index, cell in enumerate(text_nb.cells):
        built = new_cell[cell.cell_type](cell.source)
        built.metadata = {k: v for k, v in cell.metadata.items() if k not in VOLATILE_CELL_METADATA}
        built.id = cell_id(index)
        nb.cells.append(built)
    nbformat.validate(nb)
    return nb


def strip_volatile(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove what changes from run to run without changing the content (see the module docstring)."""
    nb.metadata = {**nb.metadata, **copy.deepcopy(NOTEBOOK_METADATA)}
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        for out in cell.get("outputs", []):
            if "data" in out:
                out.data.pop(WIDGET_VIEW, None)
            out.get("metadata", {}).pop("execution", None)
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = CELL_TIMEOUT) -> None:
    """Run every cell in a fresh python3 kernel, in notebooks/ (in place)."""
    from nbclient import NotebookClient

    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()


def build(source: Path, timeout: int = CELL_TIMEOUT) -> Path:
    """Execute `source` into its instructor notebook. On failure the committed notebook is left as it was, the
    partial run is written to artifacts/notebooks/, and the error is raised."""
    nb = notebook_from_source(source)
    target = notebook_path(source)
    student_notebook(nb, target.name)          # unbalanced solution markers stop the build before it runs
    try:
        execute(nb, timeout)
    except Exception:
        PARTIAL.mkdir(parents=True, exist_ok=True)
        partial = PARTIAL / f"{source.stem}.partial.ipynb"
        nbformat.write(strip_volatile(nb), partial)
        print(f"error: executing {_rel(source)} failed; {_rel(target)} is unchanged, the partial run is in "
              f"{_rel(partial)}", file=sys.stderr)
        raise
    strip_volatile(nb)
    nbformat.validate(nb)
    nbformat.write(nb, target)
    return target


def _describe_cell(nb: nbformat.NotebookNode, index: int) -> str:
    cell = nb.cells[index]
    first = next((line for line in cell.source.split("\n") if line.strip()), "")
    return f"cell {index} ({cell.cell_type}, {first[:60]!r})"


def source_differences(source: Path, committed: nbformat.NotebookNode) -> list[str]:
    """How the committed notebook differs from what its source builds, outputs aside ([] when in sync)."""
    expected = notebook_from_source(source)
    problems = []
    if committed.metadata != expected.metadata:
        keys = sorted(k for k in {*committed.metadata, *expected.metadata}
                      if committed.metadata.get(k) != expected.metadata.get(k))
        problems.append(f"notebook metadata differs in {', '.join(keys)}")
    if len(committed.cells) != len(expected.cells):
        problems.append(f"{len(committed.cells)} cells, the source has {len(expected.cells)}")
    for index, (have, want) in enumerate(zip(committed.cells, expected.cells)):
        for field in ("cell_type", "source", "metadata"):
            if have.get(field) != want.get(field):
                problems.append(f"{_describe_cell(expected, index)}: {field} differs")
                break
        else:
            if have.get("id") != want.id:
                problems.append(f"cell {index} has id {have.get('id')!r}, not {want.id!r}")
        if len(problems) >= 3:
            break
    for index, cell in enumerate(committed.cells):
        if any(WIDGET_VIEW in out.get("data", {}) for out in cell.get("outputs", [])):
            problems.append(f"cell {index} keeps a widget-view output (volatile)")
            break
    return problems


def out_of_sync() -> list[str]:
    """Each instructor notebook that is missing, differs from its source, or has no source, with the reason."""
    found = []
    built = set()
    for source in sources():
        target = notebook_path(source)
        built.add(target.name)
        if not target.is_file():
            found.append(f"{_rel(target)} (missing: never built from {_rel(source)})")
            continue
        problems = source_differences(source, nbformat.read(target, as_version=4))
        if problems:
            found.append(f"{_rel(target)} (differs from {_rel(source)}: " + "; ".join(problems) + ")")
    for target in sorted(NOTEBOOKS.glob("*.ipynb")):
        if target.name not in built:
            found.append(f"{_rel(target)} (no source {_rel(SOURCES / (target.stem + '.py'))})")
    return found


# --------------------------------------------------------------------------------------------------------
# Instructor notebooks -> student copies
# --------------------------------------------------------------------------------------------------------
def is_solution(cell: nbformat.NotebookNode) -> bool:
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def strip_solution(source: str, exercise: str, where: str = "a solution cell") -> str:
    """Replace each ### BEGIN SOLUTION ... ### END SOLUTION region by the placeholder, at the markers' indentation.

    Args:
        source: the cell's code.
        exercise: "N.K", written into the placeholder's NotImplementedError.
        where: names the cell in error messages ("notebooks/02_advantages.ipynb, cell 45 (id cell-45)").

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
        cell.setdefault("id", cell_id(i))                     # ids are kept; a missing one is made stable
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
    stem = name.removesuffix(".ipynb")
    header = nbformat.v4.new_markdown_cell(STUDENT_HEADER.format(name=name, stem=stem, exercises=exercises))
    header.id = HEADER_ID
    nb.cells = [header, *cells]
    return nb


def instructor_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def render_student(path: Path) -> str:
    """The exact text the student copy of instructor notebook `path` is written as."""
    nb = student_notebook(nbformat.read(path, as_version=4), path.name)
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def stale_student_copies() -> list[str]:
    """Student copies that are missing, differ from a fresh render, or have no instructor notebook."""
    stale = []
    expected = {path.name: render_student(path) for path in instructor_notebooks()}
    for name, text in expected.items():
        target = STUDENTS / name
        if not target.is_file():
            stale.append(f"{_rel(target)} (missing)")
        elif target.read_text(encoding="utf-8") != text:
            stale.append(f"{_rel(target)} (out of date with notebooks/{name})")
    for target in sorted(STUDENTS.glob("*.ipynb")):
        if target.name not in expected:
            stale.append(f"{_rel(target)} (no instructor notebook notebooks/{target.name})")
    return stale


def write_student_copies() -> None:
    """(Re)write every student copy from the committed instructor notebooks; remove orphaned copies."""
    rendered = {path.name: render_student(path) for path in instructor_notebooks()}   # all or nothing
    STUDENTS.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        target = STUDENTS / name
        changed = not target.is_file() or target.read_text(encoding="utf-8") != text
        target.write_text(text, encoding="utf-8")
        print(f"{'wrote' if changed else 'unchanged'} {_rel(target)}")
    for target in sorted(STUDENTS.glob("*.ipynb")):
        if target.name not in rendered:
            target.unlink()
            print(f"removed {_rel(target)} (its instructor notebook is gone)")


# --------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------
def select(names: list[str]) -> list[Path]:
    """The sources named by `names` (a number "04", a stem, or a path to the .py or .ipynb); all when empty."""
    available = sources()
    if not names:
        return available
    chosen = []
    for name in names:
        stem = Path(name).stem
        matches = [s for s in available if s.stem == stem or (stem.isdigit() and s.stem.split("_")[0] == stem)]
        if len(matches) != 1:
            known = ", ".join(s.stem for s in available) or "none"
            raise UnknownNotebookError(f"{name!r} names {'no' if not matches else 'more than one'} notebook source "
                                       f"in {_rel(SOURCES)} (known: {known})")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def check() -> int:
    """What --check prints and returns: 0 when every notebook matches its source and every student copy is current."""
    unsynced, stale = out_of_sync(), stale_student_copies()
    if unsynced:
        print("Notebooks out of date with their sources (run: python scripts/build_notebooks.py <number>):\n  "
              + "\n  ".join(unsynced), file=sys.stderr)
    if stale:
        print("Student copies out of date (run: python scripts/build_notebooks.py --students):\n  "
              + "\n  ".join(stale), file=sys.stderr)
    if unsynced or stale:
        return 1
    print(f"{len(sources())} notebooks match their sources; student copies up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="See the module docstring (and README, 'Editing a notebook').")
    parser.add_argument("notebooks", nargs="*", help="notebooks to build: 04, 04_the_loss, or a path (default: all)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="execute nothing; exit 1 listing notebooks that differ from their source and stale "
                           "student copies")
    mode.add_argument("--students", action="store_true",
                      help="only regenerate the student copies from the committed notebooks (no execution)")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    if (args.check or args.students) and args.notebooks:
        parser.error("--check and --students take no notebook names (they look at every notebook)")
    try:
        if args.check:
            return check()
        if not args.students:
            failed = []
            for source in select(args.notebooks):
                print(f"executing {_rel(source)} ...", flush=True)
                try:
                    print(f"wrote {_rel(build(source, args.timeout))}", flush=True)
                except Exception as err:                     # noqa: BLE001 - reported, the others still build
                    failed.append(f"{_rel(source)}: {type(err).__name__}: {str(err).strip()[-2000:]}")
            write_student_copies()
            if failed:
                print("error: these notebooks failed to execute (their committed .ipynb is unchanged):\n  "
                      + "\n  ".join(failed), file=sys.stderr)
                return 1
            return 0
        write_student_copies()
    except (SolutionMarkerError, UnknownNotebookError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
