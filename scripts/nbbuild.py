"""What every scripts/make_notebook_0N.py shares: the cell helpers, stable cell ids, running a notebook
without volatile metadata, and the command line.

    python scripts/make_notebook_0N.py             # write the notebook without outputs
    python scripts/make_notebook_0N.py --execute   # write it, run it top to bottom, save it with outputs

Edit the cells in the script, never in the .ipynb: the notebooks are committed with their outputs so they
read well on GitHub, and regenerating gives the same file unless a number really changed. After an
--execute, run `python scripts/make_student_notebooks.py` to refresh the student copies.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parents[1]
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def md(text: str, **fields: str) -> nbformat.NotebookNode:
    """A markdown cell; each `{name}` in `fields` is filled in after dedenting (so inserted text may be flush left)."""
    source = textwrap.dedent(text).strip("\n")
    for name, value in fields.items():
        source = source.replace("{" + name + "}", value)
    return new_markdown_cell(source)


def code(text: str) -> nbformat.NotebookNode:
    """A code cell from an indented triple-quoted string."""
    return new_code_cell(textwrap.dedent(text).strip("\n"))


def solution(text: str) -> nbformat.NotebookNode:
    """A fill-in exercise cell: tagged "solution", its answer between ### BEGIN/END SOLUTION (nbgrader's markers).

    scripts/make_student_notebooks.py turns the marked lines into `raise NotImplementedError("Exercise N.K")`
    and drops the cell's outputs in the student copy (notebooks/student/); the checker call after the
    function then reports "not yet" and the notebook runs on. Later cells never use the learner's function.
    """
    cell = code(text)
    cell.metadata["tags"] = ["solution"]
    return cell


def notebook(cells: list, id_format: str = "cell-{:02d}") -> nbformat.NotebookNode:
    """A notebook of `cells` with stable ids (regenerating gives the same file) and the python3 kernel."""
    nb = new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):
        cell.id = id_format.format(i)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, notebook_path: Path, timeout: int = 900) -> None:
    """Run every cell in a fresh kernel, in the notebook's folder, then strip volatile metadata (timings,
    widget state)."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(notebook_path.parent)}}).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)


def write(build_fn: Callable[[], nbformat.NotebookNode], notebook_path: Path, doc: str | None = None,
          timeout: int = 900) -> None:
    """The command line of every make_notebook_0N.py: build, optionally execute (keeping the partial outputs
    to debug from when a cell fails), validate and write."""
    parser = argparse.ArgumentParser(description=doc or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--execute", action="store_true", help="run the notebook and save it with outputs")
    args = parser.parse_args()
    nb = build_fn()
    if args.execute:
        try:
            execute(nb, notebook_path, timeout)
        except Exception:
            nbformat.write(nb, notebook_path)
            print(f"execution failed; partial outputs written to {notebook_path.relative_to(REPO)}")
            raise
    nbformat.validate(nb)
    notebook_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, notebook_path)
    print(f"wrote {notebook_path.relative_to(REPO)} ({len(nb.cells)} cells{', executed' if args.execute else ''})")
