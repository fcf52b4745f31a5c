"""Tests for grpo_lib.notebook: the display helpers the notebooks use (run here without a notebook)."""
import pytest
import torch

from grpo_lib.notebook import markdown_table, show_source, source_of
from grpo_lib.toy import ToyPolicy, score_answer


def test_source_of_returns_the_real_code():
    src = source_of(score_answer)
    assert src.startswith("def score_answer(answer: str) -> float:")
    assert "_WORKING.search(answer)" in src
    method = source_of(ToyPolicy.probs)
    assert method.startswith("def probs(self)")              # dedented, so it reads as top-level code


def test_source_of_refuses_objects_without_source():
    with pytest.raises(TypeError, match="cannot show the source"):
        source_of(len)
    with pytest.raises(TypeError, match="cannot show the source"):
        source_of(3)


def test_show_source_prints_outside_ipython(capsys):
    show_source(score_answer)
    out = capsys.readouterr().out
    assert "def score_answer" in out and "return 2.0 if" in out


def test_markdown_table_formats_floats_tensors_and_escapes_pipes():
    table = markdown_table(["variant", "A"], [["sample | std", 1.0], ["population", torch.tensor(1.2247449)]])
    text = getattr(table, "data", table)                     # IPython Markdown keeps the text in .data
    assert text.splitlines() == [
        "| variant | A |",
        "|---|---|",
        r"| sample \| std | 1.0000 |",
        "| population | 1.2247 |",
    ]


def test_markdown_table_refuses_ragged_rows():
    with pytest.raises(ValueError, match="row 1 has 1 values for 2 columns"):
        markdown_table(["a", "b"], [[1, 2], [3]])
