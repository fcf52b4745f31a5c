"""Honest pointers: every "Taught in:" stamp in grpo_lib names only notebooks whose code cells use the name.

A function's or class's stamp names notebooks that mention it (as a word) in a code cell; a module's stamp names
notebooks that mention the module. Code that no notebook calls says "Used by:" instead. The notebooks are read
from their sources, notebooks/src/*.py (jupytext percent format), when those exist, else from notebooks/*.ipynb.
"""
import ast
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = re.compile(r"notebooks/(0\d_\w+)\.ipynb")
STAMP = re.compile(r"Taught in:(.*?)(?:\n\s*\n|$)", re.S)


def notebook_code(stem: str) -> str:
    """The code cells of one notebook, joined (markdown cells left out)."""
    source = REPO / "notebooks" / "src" / f"{stem}.py"
    if source.exists():
        cells, current, markdown = [], [], False
        for line in source.read_text(encoding="utf-8").splitlines():
            if line.startswith("# %%"):
                if not markdown:
                    cells.append("\n".join(current))
                current, markdown = [], "[markdown]" in line
            else:
                current.append(line)
        if not markdown:
            cells.append("\n".join(current))
        return "\n".join(cells)
    nb = json.loads((REPO / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("0*.ipynb"))
CODE = {stem: notebook_code(stem) for stem in NOTEBOOKS}


def stamps():
    """(where, name, stamped notebooks) for every stamp: modules by their last dotted name, then defs."""
    for path in sorted((REPO / "grpo_lib").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            found = STAMP.search(ast.get_docstring(node) or "")
            if found:
                name = path.stem if isinstance(node, ast.Module) else node.name
                yield pytest.param(name, NOTEBOOK.findall(found.group(1)), id=f"{where}:{name}")


def test_every_notebook_is_read():
    assert len(NOTEBOOKS) == 7 and all(CODE.values())
    assert "group_advantages" in CODE["01_worked_example_2plus3"]


@pytest.mark.parametrize("name, stamped", list(stamps()))
def test_stamp_names_only_notebooks_that_use_it(name, stamped):
    assert stamped, f"the 'Taught in:' stamp of {name} names no notebook (notebooks/0N_name.ipynb)"
    missing = [stem for stem in stamped if stem not in CODE]
    assert not missing, f"{name}: the stamp names notebooks that do not exist: {missing}"
    unused = [stem for stem in stamped if not re.search(rf"\b{re.escape(name)}\b", CODE[stem])]
    assert not unused, (f"{name} is stamped 'Taught in: {', '.join(unused)}' but no code cell there uses it; "
                        "name the notebooks that do, or write 'Used by: <caller>'")


def test_the_check_fails_on_a_wrong_stamp():
    """The matcher itself: a name a notebook never uses is caught, a used one is not."""
    assert not re.search(r"\bnormalise_token_losses\b", CODE["05_full_run"])
    assert re.search(r"\bpolicy_update\b", CODE["05_full_run"])
