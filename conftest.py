"""pytest hooks for the notebook runs (`pytest --nbmake notebooks`), kept at the repository root so they
apply to notebooks/ without putting a Python file in the course folder.

1. A notebook that fails under nbmake leaves its executed copy (every output up to the failing cell,
   per-cell timings in each cell's `metadata.execution`) in $GRPO_FAILED_NOTEBOOKS (default
   test-artifacts/failed-notebooks/; a student copy as student-NN_*.ipynb), and the failure report prints the failing cell's source and outputs.
2. Each notebook's wall time is appended to $GRPO_PHASE_TIMES when that is set (scripts/dev.sh sets it;
   .ci/run prints the table at the end).
3. With $GRPO_KEEP_EXECUTED set to a folder, every executed notebook (passed or failed) is written there:
   scripts/stress_multiprocess.py reads each cell's timings from it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent


def _shown(filename: str) -> str:
    path = Path(filename).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def failed_notebooks_dir() -> Path:
    return Path(os.environ.get("GRPO_FAILED_NOTEBOOKS", REPO / "test-artifacts" / "failed-notebooks"))


def _text_of(output: dict) -> str:
    """A readable line for one saved output: stream text, error traceback, or the MIME types of display data."""
    kind = output.get("output_type")
    if kind == "stream":
        return output.get("text", "")
    if kind == "error":
        import re
        return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(output.get("traceback", [])))
    data = output.get("data", {})
    return data.get("text/plain", "") if "text/plain" in data else f"<{', '.join(sorted(data))}>"


def describe_failing_cell(nb, index: int) -> str:
    """The failing cell's number, source and outputs (stderr and tracebacks included), as plain text."""
    cells = nb["cells"]
    if not 0 <= index < len(cells):
        return f"(no failing cell index: {index})"
    cell = cells[index]
    outputs = "\n".join(_text_of(o) for o in cell.get("outputs", []))
    return (f"--- failing cell {index} (of {len(cells)}) ---\n{''.join(cell.get('source', ''))}\n"
            f"--- its outputs ---\n{outputs or '(none)'}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    t0 = time.monotonic()
    outcome = yield
    if not getattr(item, "nbmake", False):
        return
    took = time.monotonic() - t0
    times = os.environ.get("GRPO_PHASE_TIMES")
    if times:
        status = "ok" if outcome.excinfo is None else "FAILED"
        with open(times, "a", encoding="utf-8") as f:
            f.write(f"notebook {_shown(item.filename)}\t{took:.0f}\t{status}\n")
    if outcome.excinfo is None:
        return
    err = outcome.excinfo[1]
    res = err.args[0] if err.args else None
    nb = getattr(res, "nb", None)
    if nb is None:
        return
    import nbformat

    out_dir = failed_notebooks_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = Path(item.filename)
    saved = out_dir / (f"student-{path.name}" if path.parent.name == "student" else path.name)
    nbformat.write(nb, str(saved))
    index = getattr(res.error, "failing_cell_index", -1) if res.error is not None else -1
    item.add_report_section("call", "failed notebook",
                            f"executed notebook saved to {saved}\n{describe_failing_cell(nb, index)}")


def pytest_configure(config):
    keep = os.environ.get("GRPO_KEEP_EXECUTED")
    if not keep:
        return
    try:
        from nbmake.nb_run import NotebookRun
    except ImportError:
        return
    import nbformat

    execute = NotebookRun.execute

    def execute_and_keep(self):
        res = execute(self)
        target = Path(keep) / _shown(str(self.filename)).lstrip("/")     # notebooks/student/... kept apart
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(res.nb, str(target))
        return res
    NotebookRun.execute = execute_and_keep
