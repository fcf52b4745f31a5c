"""The learner's quiz (grpo_lib.course.quiz) and its place at the end of every notebook.

`quiz` shows each question with a collapsed answer and raises when a question's fact (computed in the notebook from
the numbers it printed) no longer makes its answer right, so an executed notebook with a stale quiz fails like a
failing check cell. Every notebook ends with one quiz of 4 to 6 questions, each with such a fact.
"""
import ast
import re
from pathlib import Path

import pytest

from grpo_lib.course.quiz import Question, Quiz, quiz

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("0*.py"))


def test_quiz_shows_questions_with_collapsed_answers():
    q = quiz("Quiz · test", Question("2 + 3?", ("4", "5"), 1, "five", 2 + 3 == 5),
             Question("a tensor fact", ("yes", "no"), 0, "why", lambda: True))
    assert isinstance(q, Quiz) and len(q.questions) == 2
    html = q._repr_html_()
    assert html.count("<details><summary>Answer</summary>") == 2 and "<b>B</b>: five" in html
    assert html.index("<li>5</li>") < html.index("<details>")                 # the choices come before the answer
    text = repr(q)
    assert text.startswith("Quiz · test: 2 questions") and "   B. 5" in text and "Q1 B (five)" in text


def test_quiz_raises_naming_every_stale_answer():
    with pytest.raises(AssertionError, match=r"(?s)2 of 3 answers no longer match.*Q1: a.*Q3: c") as err:
        quiz("Quiz · stale", Question("a", ("x", "y"), 0, "", False), Question("b", ("x", "y"), 0, "", True),
             Question("c", ("x", "y"), 0, "", lambda: 1 / 0))
    assert "ZeroDivisionError" in str(err.value)


@pytest.mark.parametrize("bad, match", [((), "at least one"), ((Question("a", ("x",), 0, ""),), "2 to 8 choices"),
                                        ((Question("a", ("x", "y"), 2, ""),), "answer 2 is not one"),
                                        (("not a question",), "not a Question")])
def test_quiz_rejects_malformed_questions(bad, match):
    with pytest.raises(ValueError, match=match):
        quiz("Quiz · bad", *bad)


def _quiz_calls(path):
    tree = ast.parse(path.read_text())
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "quiz"]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_every_notebook_ends_with_a_quiz_of_4_to_6_checked_questions(source):
    calls = _quiz_calls(source)
    assert len(calls) == 1, f"{source.name}: {len(calls)} quiz cells"
    questions = [a for a in calls[0].args[1:] if isinstance(a, ast.Call) and getattr(a.func, "id", "") == "Question"]
    assert 4 <= len(questions) <= 6, f"{source.name}: {len(questions)} questions"
    facts = [q.args[4] for q in questions if len(q.args) >= 5]
    assert len(facts) == len(questions)
    assert sum(not (isinstance(f, ast.Constant) and f.value is True) for f in facts) >= len(questions) - 1, \
        f"{source.name}: at most one question may go without a fact computed from the notebook"
    text = source.read_text()
    assert text.index("## Quiz: check yourself") > text.index("## Exercises")
    assert text.index("## Quiz: check yourself") < text.index("## Next")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_the_built_notebook_shows_its_quiz_with_every_fact_holding(source):
    """The committed notebook ran its quiz (so every answer's fact held on the numbers it printed) and shows it."""
    import json

    built = json.loads((ROOT / "notebooks" / f"{source.stem}.ipynb").read_text())
    n = len([a for a in _quiz_calls(source)[0].args[1:] if isinstance(a, ast.Call)])
    shown = ["".join(out.get("data", {}).get("text/plain", "")) for cell in built["cells"]
             for out in cell.get("outputs", [])]
    title = f"Quiz · notebook {source.stem[:2]}: {n} questions"
    assert any(text.startswith(title) for text in shown), f"{source.stem}.ipynb does not show '{title}'"
    html = [out["data"]["text/html"] for cell in built["cells"] for out in cell.get("outputs", [])
            if "text/html" in out.get("data", {}) and "Quiz · notebook" in "".join(out["data"]["text/html"])]
    assert html and "".join(html[0]).count("<details><summary>Answer</summary>") == n
