"""The test command's own machinery: what CI keeps of a failing notebook, the phase timings, the stress
script's reading of per-cell timings, and the --quick guard."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid

import nbformat
import pytest

from conftest import REPO


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.notebook
def test_a_failing_notebook_is_kept_executed_and_its_cell_printed(tmp_path):
    # under the repository (the root conftest.py applies there); test-artifacts/ is git-ignored
    folder = REPO / "test-artifacts" / f"harness-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    try:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("print('the cell before ran')"),
                    nbformat.v4.new_code_cell("x = 41\nprint('about to fail')\nraise ValueError(f'boom {x + 1}')"),
                    nbformat.v4.new_code_cell("print('never reached')")]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, str(folder / "bad.ipynb"))
        times = tmp_path / "phases.tsv"
        env = {**os.environ, "GRPO_FAILED_NOTEBOOKS": str(tmp_path / "failed"), "GRPO_PHASE_TIMES": str(times)}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake",
                               str((folder / "bad.ipynb").relative_to(REPO))],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(folder)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    # the report prints the failing cell's source and its outputs, and where the executed copy is
    assert "failing cell 1 (of 3)" in proc.stdout and "raise ValueError(f'boom {x + 1}')" in proc.stdout
    assert "about to fail" in proc.stdout and "ValueError: boom 42" in proc.stdout
    kept = nbformat.read(str(tmp_path / "failed" / "bad.ipynb"), as_version=4)
    assert kept.cells[0].outputs[0]["text"] == "the cell before ran\n"
    assert kept.cells[1].outputs[-1]["ename"] == "ValueError"
    assert kept.cells[2].outputs == []
    (line,) = times.read_text().splitlines()
    name, seconds, status = line.split("\t")
    assert name.endswith("bad.ipynb") and name.startswith("notebook ") and status == "FAILED"
    assert 0 <= int(seconds) < 300


def test_stress_script_finds_the_slowest_cell(tmp_path):
    stress = load_script("stress_multiprocess")

    def cell(start, end):
        return {"cell_type": "code", "metadata": {"execution": {"iopub.execute_input": start,
                                                                "shell.execute_reply": end}}}
    nb = {"cells": [cell("2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:01.500000Z"),
                    {"cell_type": "markdown", "metadata": {}},
                    cell("2026-01-01T00:00:02.000000Z", "2026-01-01T00:15:02.250000Z"),   # a 15-minute stall
                    cell("2026-01-01T00:15:03.000000Z", "2026-01-01T00:15:04.000000Z")]}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    assert stress.slowest_cell(path) == (2, pytest.approx(900.25))
    assert stress.slowest_cell(tmp_path / "missing.ipynb") is None


def test_stress_script_refuses_bad_counts():
    stress = load_script("stress_multiprocess")
    with pytest.raises(SystemExit):
        stress.main(["--nbmake", "--loaded-runs", "-1"])
    with pytest.raises(SystemExit, match="expected one notebooks/99_"):
        stress.main(["--nbmake", "--runs", "1", "--loaded-runs", "0", "--notebooks", "99"])
