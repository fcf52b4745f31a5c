"""The learner's own quiz at the end of each notebook: predict, then reveal.

Each question has a few choices, the right one and a short reason that quotes the notebook's own number. In
JupyterLab (and in any viewer that renders HTML) a question shows its choices and a collapsed "Answer" that
the learner opens after choosing, so nothing needs a live kernel or a widget round trip: the cell runs under
nbmake like any other, and a reopened notebook still works.

Every question also carries a fact (`holds`), computed in the notebook from the numbers it just printed, that
makes its answer right (as `grpo_lib.course.notebook.check` does for a section's claims). `quiz` raises naming
every question whose fact fails, so when a change in the library or a seed moves a number, the executed
notebook (CI) fails instead of quizzing the learner on a stale answer.

Taught in: notebooks/01_worked_example_2plus3.ipynb (every notebook ends with one)
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

LETTERS = "ABCDEFGH"


@dataclass(frozen=True)
class Question:
    """One multiple-choice question.

    Attributes:
        text: the question.
        choices: two to eight answers to choose from.
        answer: the index of the right choice.
        why: why it is right, with the notebook's number.
        holds: a bool, a one-element tensor or a callable returning one: True when the notebook's numbers make
            `answer` right.
    """

    text: str
    choices: tuple[str, ...]
    answer: int
    why: str
    holds: Any = True


@dataclass(frozen=True)
class Quiz:
    """What `quiz` returns: renders as questions with collapsed answers (HTML), or as text."""

    title: str
    questions: tuple[Question, ...]

    def __repr__(self) -> str:
        lines = [f"{self.title}: {len(self.questions)} questions. Choose, then open the answer."]
        for n, q in enumerate(self.questions, 1):
            lines.append(f"Q{n}. {q.text}")
            lines += [f"   {LETTERS[k]}. {c}" for k, c in enumerate(q.choices)]
        lines.append("Answers: " + "; ".join(f"Q{n} {LETTERS[q.answer]} ({q.why})"
                                            for n, q in enumerate(self.questions, 1)))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        parts = [f"<h4>{html.escape(self.title)}</h4><p>Choose an answer before you open it.</p>"]
        for n, q in enumerate(self.questions, 1):
            items = "".join(f"<li>{html.escape(c)}</li>" for c in q.choices)
            parts.append(f"<p><b>Q{n}.</b> {html.escape(q.text)}</p><ol type='A'>{items}</ol>"
                         f"<details><summary>Answer</summary><p><b>{LETTERS[q.answer]}</b>: "
                         f"{html.escape(q.why)}</p></details>")
        return "".join(parts)


def _holds(value: Any) -> tuple[bool, str | None]:
    try:
        if callable(value):
            value = value()
        if hasattr(value, "numel") and value.numel() != 1:
            return False, f"a tensor of {value.numel()} values is not one truth value"
        return bool(value), None
    except Exception as err:  # noqa: BLE001 - a fact that cannot be evaluated fails
        return False, f"{type(err).__name__}: {err}"


def quiz(title: str, *questions: Question) -> Quiz:
    """The learner's quiz: check every question's fact, then show the questions with collapsed answers.

    Args:
        title: e.g. "Quiz · notebook 01".
        *questions: `Question`s.

    Returns:
        a `Quiz` (the cell's last expression shows it).

    Raises:
        ValueError: no questions, fewer than two choices, or an answer index outside the choices.
        AssertionError: one or more questions' facts do not hold (each is named).

    Taught in: notebooks/01_worked_example_2plus3.ipynb
    """
    if not questions:
        raise ValueError(f"quiz({title!r}) needs at least one Question")
    failing = []
    for n, q in enumerate(questions, 1):
        if not isinstance(q, Question):
            raise ValueError(f"quiz({title!r}): item {n} is not a Question: {q!r:.80}")
        if not 2 <= len(q.choices) <= len(LETTERS):
            raise ValueError(f"quiz({title!r}) Q{n}: give 2 to {len(LETTERS)} choices, got {len(q.choices)}")
        if not 0 <= q.answer < len(q.choices):
            raise ValueError(f"quiz({title!r}) Q{n}: answer {q.answer} is not one of the {len(q.choices)} choices")
        ok, error = _holds(q.holds)
        if not ok:
            failing.append(f"✗ Q{n}: {q.text}" + (f" ({error})" if error else ""))
    if failing:
        raise AssertionError(f"{title}: {len(failing)} of {len(questions)} answers no longer match the notebook's "
                             f"numbers:\n  " + "\n  ".join(failing))
    return Quiz(title, tuple(questions))
