"""Notebook sources (notebooks/src/*.py, jupytext percent format) and their builder, scripts/build_notebooks.py.

- every committed instructor notebook has the cells of its source: type, text, metadata (the "solution" tags
  the student copies depend on), stable ids, the same notebook metadata (else: `python scripts/build_notebooks.py
  <number>`); the check behind this names what differs (text, tag, id, a missing notebook or source);
- a source's cells survive the trip into the notebook exactly: magics, tags, other cell metadata, markdown;
- the volatile parts of an executed notebook (timings, widget state and views, the Python version) are stripped
  and the content (outputs, plain-text fallbacks, execution counts) is kept; running a tiny notebook gives
  execution counts 1, 2, ... and a failing one leaves the committed notebook untouched;
- the jupytext pairing: saving an instructor notebook through jupytext's contents manager (what JupyterLab does)
  writes its source, saving it unedited leaves every source byte-identical, and student copies are not paired.

None of this executes a course notebook (CI runs them with nbmake).
"""
import importlib.util
import os
import shutil
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext import TextFileContentsManager
from nbformat.v4 import new_output

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("build_notebooks", REPO / "scripts" / "build_notebooks.py")
build = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(build)

SOURCES = sorted((REPO / "notebooks" / "src").glob("*.py"))

TINY_SOURCE = '''\
# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Example
#
# **7.1 · Double (fill in).**

# %%
# %matplotlib inline
x = 1 + 1
x

# %% tags=["solution"]
def double(x):
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION


print(double(x))

# %% slideshow={"slide_type": "skip"}
print("done")
'''


@pytest.fixture
def tiny_repo(tmp_path, monkeypatch):
    """A repository layout in tmp_path with the real jupytext configuration and one tiny source."""
    notebooks = tmp_path / "notebooks"
    (notebooks / "src").mkdir(parents=True)
    (notebooks / "student").mkdir()
    shutil.copy(REPO / "notebooks" / "jupytext.toml", notebooks / "jupytext.toml")
    shutil.copy(REPO / "notebooks" / "student" / "jupytext.toml", notebooks / "student" / "jupytext.toml")
    (notebooks / "src" / "07_example.py").write_text(TINY_SOURCE, encoding="utf-8")
    monkeypatch.setattr(build, "REPO", tmp_path)
    monkeypatch.setattr(build, "NOTEBOOKS", notebooks)
    monkeypatch.setattr(build, "SOURCES", notebooks / "src")
    monkeypatch.setattr(build, "STUDENTS", notebooks / "student")
    monkeypatch.setattr(build, "PARTIAL", tmp_path / "artifacts" / "notebooks")
    return tmp_path


def _fake_build(repo: Path) -> Path:
    """Write the tiny notebook as the builder would after running it, without a kernel (one output per code cell)."""
    nb = build.notebook_from_source(repo / "notebooks" / "src" / "07_example.py")
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            cell.outputs = [new_output("stream", name="stdout", text=f"output {count}\n")]
    path = repo / "notebooks" / "07_example.ipynb"
    nbformat.write(nb, path)
    return path


# --- the committed notebooks ------------------------------------------------------------------------


def test_every_notebook_has_a_source_and_matches_it():
    assert [p.stem for p in SOURCES] == [p.stem for p in sorted((REPO / "notebooks").glob("*.ipynb"))]
    unsynced = build.out_of_sync()
    assert not unsynced, ("committed notebooks differ from their sources:\n  " + "\n  ".join(unsynced)
                          + "\nRun: python scripts/build_notebooks.py <number>")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_source_header_is_small_and_exercises_are_tagged(source):
    text = source.read_text(encoding="utf-8")
    header = text.split("\n# ---\n", 1)[0] + "\n# ---"
    assert header == TINY_SOURCE.split("\n\n", 1)[0]          # the kernel only: no jupytext or Python version
    nb = jupytext.read(source)
    solution_cells = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert solution_cells, f"{source.name}: no cell tagged solution (every notebook has a fill-in exercise)"
    for cell in solution_cells:
        assert build.BEGIN in cell.source and build.END in cell.source


# --- sources -> notebooks ---------------------------------------------------------------------------


def test_notebook_from_source_keeps_every_cell_exactly(tiny_repo):
    nb = build.notebook_from_source(tiny_repo / "notebooks" / "src" / "07_example.py")
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code", "code"]
    assert [c.id for c in nb.cells] == ["cell-00", "cell-01", "cell-02", "cell-03"]
    assert nb.cells[0].source == "# 07 · Example\n\n**7.1 · Double (fill in).**"
    assert nb.cells[1].source == "%matplotlib inline\nx = 1 + 1\nx"          # the magic is uncommented
    assert nb.cells[2].metadata == {"tags": ["solution"]}
    assert nb.cells[2].source == ("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"
                                  "\n\n\nprint(double(x))")
    assert nb.cells[3].metadata == {"slideshow": {"slide_type": "skip"}}
    assert nb.metadata == {"kernelspec": build.KERNELSPEC, "language_info": {"name": "python"}}
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")


def test_strip_volatile_keeps_content_and_drops_run_to_run_noise():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("bar", execution_count=4)])
    nb.metadata = {"kernelspec": build.KERNELSPEC, "widgets": {"state": {"abc": {}}},
                   "language_info": {"name": "python", "version": "3.11.7", "pygments_lexer": "ipython3"}}
    cell = nb.cells[0]
    cell.metadata = {"tags": ["x"], "execution": {"iopub.execute_input": "2026-01-01T00:00:00Z"},
                     "scrolled": True}
    cell.outputs = [new_output("display_data", {build.WIDGET_VIEW: {"model_id": "53d4"},
                                                "text/plain": "Loading weights: 100%"}),
                    new_output("execute_result", {"text/plain": "2"}, execution_count=4)]
    build.strip_volatile(nb)
    assert nb.metadata == {"kernelspec": build.KERNELSPEC, "language_info": {"name": "python"}}
    assert cell.metadata == {"tags": ["x"]} and cell.execution_count == 4
    assert cell.outputs[0].data == {"text/plain": "Loading weights: 100%"}
    assert cell.outputs[1].data == {"text/plain": "2"} and cell.outputs[1].execution_count == 4


def test_build_runs_a_notebook_and_a_failure_keeps_the_committed_one(tiny_repo):
    source = tiny_repo / "notebooks" / "src" / "07_example.py"
    target = build.build(source, timeout=120)
    nb = nbformat.read(target, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2, 3]
    assert code[0].outputs[0].data == {"text/plain": "2"}
    assert code[1].outputs[0].text == "4\n" and code[2].outputs[0].text == "done\n"
    assert nb.metadata == {"kernelspec": build.KERNELSPEC, "language_info": {"name": "python"}}
    assert all("execution" not in c.metadata for c in nb.cells)
    assert build.source_differences(source, nb) == []
    before = target.read_bytes()
    source.write_text(TINY_SOURCE.replace("print(\"done\")", "raise ValueError('broken on purpose')"))
    with pytest.raises(Exception, match="broken on purpose"):
        build.build(source, timeout=120)
    assert target.read_bytes() == before                                     # the committed notebook survives
    partial = nbformat.read(tiny_repo / "artifacts" / "notebooks" / "07_example.partial.ipynb", as_version=4)
    assert partial.cells[2].outputs[0].text == "4\n"                         # the cells before the failure ran


# --- the check ----------------------------------------------------------------------------------------


def test_check_names_each_kind_of_difference(tiny_repo, capsys):
    source = tiny_repo / "notebooks" / "src" / "07_example.py"
    assert any("07_example.ipynb (missing" in line for line in build.out_of_sync())
    path = _fake_build(tiny_repo)
    assert build.out_of_sync() == []
    assert build.main(["--check"]) == 1                                       # no student copy yet
    assert "notebooks/student/07_example.ipynb (missing)" in capsys.readouterr().err
    assert build.main(["--students"]) == 0
    assert build.main(["--check"]) == 0

    source.write_text(TINY_SOURCE.replace("x = 1 + 1", "x = 2 + 2"), encoding="utf-8")      # an edited line
    assert build.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "07_example.ipynb (differs from notebooks/src/07_example.py: cell 1 (code, '%matplotlib inline'): " \
           "source differs)" in err and "build_notebooks.py <number>" in err

    source.write_text(TINY_SOURCE.replace('tags=["solution"]', ""), encoding="utf-8")          # a lost tag
    assert build.out_of_sync() == [f"notebooks/07_example.ipynb (differs from notebooks/src/07_example.py: "
                                   f"cell 2 (code, 'def double(x):'): metadata differs)"]

    source.write_text(TINY_SOURCE, encoding="utf-8")
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].id = "a1b2c3"                                                 # e.g. a cell re-added in Jupyter
    nb.cells[1].outputs.append(new_output("display_data", {build.WIDGET_VIEW: {"model_id": "1"}}))
    nb.metadata["language_info"]["version"] = "3.11.7"
    nbformat.write(nb, path)
    (problem,) = build.out_of_sync()
    assert "notebook metadata differs in language_info" in problem
    assert "cell 1 has id 'a1b2c3', not 'cell-01'" in problem and "widget-view output" in problem

    source.unlink()
    assert build.out_of_sync() == ["notebooks/07_example.ipynb (no source notebooks/src/07_example.py)"]


def test_command_line_refuses_unknown_notebooks_before_running_anything(tiny_repo, capsys):
    assert build.main(["99"]) == 2
    assert "'99' names no notebook source in notebooks/src (known: 07_example)" in capsys.readouterr().err
    assert not (tiny_repo / "notebooks" / "07_example.ipynb").exists()
    assert [p.stem for p in build.select(["07", "notebooks/07_example.ipynb", "07_example"])] == ["07_example"]


# --- jupytext pairing (what JupyterLab does on save) ------------------------------------------------


@pytest.mark.parametrize("root", ["notebooks", "."], ids=["lab-root-notebooks", "lab-root-repo"])
def test_saving_the_notebook_in_jupyter_writes_its_source(tiny_repo, root):
    _fake_build(tiny_repo)
    build.write_student_copies()
    source = tiny_repo / "notebooks" / "src" / "07_example.py"
    manager = TextFileContentsManager(root_dir=str(tiny_repo / root))
    prefix = "" if root == "notebooks" else "notebooks/"

    model = manager.get(prefix + "07_example.ipynb")                          # opening it, unedited
    manager.save(model, prefix + "07_example.ipynb")
    assert source.read_text(encoding="utf-8") == TINY_SOURCE                  # saving changes no byte

    model = manager.get(prefix + "07_example.ipynb")
    model["content"]["cells"][1]["source"] = "%matplotlib inline\nx = 20 + 22\nx"
    manager.save(model, prefix + "07_example.ipynb")
    assert "\nx = 20 + 22\n" in source.read_text(encoding="utf-8")
    assert build.notebook_from_source(source).cells[1].source == "%matplotlib inline\nx = 20 + 22\nx"
    saved = nbformat.read(tiny_repo / "notebooks" / "07_example.ipynb", as_version=4)
    assert saved.cells[2].metadata["tags"] == ["solution"] and saved.cells[1].outputs   # outputs kept

    student = manager.get(prefix + "student/07_example.ipynb")               # a student copy is not paired
    manager.save(student, prefix + "student/07_example.ipynb")
    assert sorted(p.name for p in (tiny_repo / "notebooks").rglob("*.py")) == ["07_example.py"]
    assert not (tiny_repo / "notebooks" / "student" / "src").exists()
    assert source.read_text(encoding="utf-8") == TINY_SOURCE.replace("x = 1 + 1", "x = 20 + 22")


def test_the_committed_sources_are_what_jupyter_writes(tmp_path):
    """Saving each course notebook unedited through the paired contents manager leaves its source byte-identical
    (so opening a notebook in JupyterLab never rewrites a source)."""
    notebooks = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", notebooks, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    manager = TextFileContentsManager(root_dir=str(notebooks))
    for source in SOURCES:
        # the build writes each notebook after its source, so the notebook is the newer file; jupytext then
        # refuses to open a pair that differs (even by a blank line). A fresh clone gives both the same time
        # and would hide it: make the notebook newer here, as after a build.
        src_time = (notebooks / "src" / source.name).stat().st_mtime
        os.utime(notebooks / f"{source.stem}.ipynb", (src_time + 10, src_time + 10))
        manager.save(manager.get(f"{source.stem}.ipynb"), f"{source.stem}.ipynb")
        assert (notebooks / "src" / source.name).read_bytes() == source.read_bytes(), source.name


def test_build_refuses_unbalanced_solution_markers_before_running(tiny_repo, monkeypatch):
    source = tiny_repo / "notebooks" / "src" / "07_example.py"
    source.write_text(TINY_SOURCE.replace("    ### END SOLUTION\n", ""), encoding="utf-8")
    monkeypatch.setattr(build, "execute", lambda *a, **k: pytest.fail("executed a notebook with broken markers"))
    with pytest.raises(build.SolutionMarkerError, match=r"07_example.ipynb, cell 2 .*never closed"):
        build.build(source)
    assert not (tiny_repo / "notebooks" / "07_example.ipynb").exists()
