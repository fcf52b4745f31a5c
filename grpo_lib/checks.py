"""What every exercise checker shares: the result object, the ✓/✗ messages, and safe calls into learner code.

The exercise convention of the course (docs/teaching.md has the instructor's side of it):

- An instructor notebook holds the reference solution of a fill-in exercise between `### BEGIN SOLUTION` and
  `### END SOLUTION` in a code cell tagged "solution"; `scripts/make_student_notebooks.py` replaces that region
  by `raise NotImplementedError("Exercise N.K")` in the student copy.
- A checker (`check_*` in `grpo_lib.checks_01`, `checks_02_03`, `checks_04`, `checks_05`) runs the learner's
  function on a few fixed cases, compares it with a tested reference, prints one message and returns a
  `CheckResult` that is truthy only when every case passed:

      ✓ Correct: ...
      ✗ Not yet. For <case> expected <value>, got <value>.
        Hint: ...
      ✗ Not yet: Exercise N.K is not filled in yet.
        Hint: ...

- A checker never raises, whatever the learner's function does (raises, returns None, a string, a tensor of
  the wrong shape, NaN): a student copy with every exercise still blank runs top to bottom under nbmake.

Taught in: every notebook's "Exercises" section (notebooks/01_worked_example_2plus3.ipynb to
notebooks/05_full_run.ipynb).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class CheckResult:
    """Outcome of a checker: truthy when the learner's answer passed every case.

    Attributes:
        passed: True when every case matched the reference.
        message: what was printed, "✓ ...", "✗ Not yet. ... Hint: ..." or "✗ Not yet: Exercise N.K is not
            filled in yet. Hint: ...".
    """

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message


def report(passed: bool, message: str) -> CheckResult:
    """Print `message` and return it as a `CheckResult`."""
    result = CheckResult(passed, message)
    print(message)
    return result


def fail(case: str, expected: Any, got: Any, hint: str) -> CheckResult:
    """'✗ Not yet. For <case> expected <expected>, got <got>.' plus a hint, printed and returned (falsy)."""
    return report(False, f"✗ Not yet. For {case} expected {expected}, got {got}.\n  Hint: {hint}")


def not_yet(exercise: str, hint: str) -> CheckResult:
    """'✗ Not yet: Exercise N.K is not filled in yet.' plus a hint: the student copy's placeholder ran."""
    return report(False, f"✗ Not yet: Exercise {exercise} is not filled in yet.\n  Hint: {hint}")


def call(fn: Callable, *args: Any) -> tuple[Any, str | None]:
    """fn(*args), or the exception as "TypeName: text": a learner's bug must not crash the notebook."""
    try:
        return fn(*args), None
    except Exception as err:  # noqa: BLE001 - any error in learner code becomes a hint, never a crash
        return None, f"{type(err).__name__}: {err}"


def is_unfilled(error: str | None) -> bool:
    """True when `call` caught the placeholder's NotImplementedError (the exercise is still blank)."""
    return bool(error) and error.startswith("NotImplementedError")


def exercise_of(error: str | None, default: str) -> str:
    """The "N.K" named in the placeholder's message, NotImplementedError("Exercise N.K"), else `default`."""
    found = re.search(r"Exercise (\d+\.\d+)", error or "")
    return found.group(1) if found else default


def as_tensor(value: Any) -> torch.Tensor | None:
    """`value` as a float32 tensor (a tensor, a list, a number), or None when it is not numeric."""
    try:
        if isinstance(value, torch.Tensor):
            return value.detach().float()
        return torch.as_tensor(value, dtype=torch.float32)
    except Exception:  # noqa: BLE001 - strings, None, ragged lists: the caller reports them
        return None


def fmt(t: torch.Tensor) -> str:
    """A tensor as a short nested list, 4 decimals: [[0.0, -1.0, 1.0]] or [0.0, -1.0, 1.0] or 0.2727."""
    if t.dim() == 0:
        return f"{float(t):.4f}"
    if t.dim() == 1:
        return str([round(float(v), 4) for v in t])
    return str([[round(float(v), 4) for v in row] for row in t.reshape(t.shape[0], -1)])


def never_raises(exercise: str) -> Callable:
    """Decorator for a checker: an unexpected error inside the checker itself becomes a ✗ message, not a crash.

    The checkers are written not to raise; this is the last line of defence for answers nobody foresaw.
    """
    def wrap(check: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
        @functools.wraps(check)
        def safe(*args: Any, **kwargs: Any) -> CheckResult:
            try:
                return check(*args, **kwargs)
            except Exception as err:  # noqa: BLE001
                return report(False, f"✗ Not yet. Exercise {exercise}: your answer could not be checked "
                                     f"({type(err).__name__}: {err}).\n  Hint: read the exercise's signature "
                                     f"again: what goes in, and what must come back.")
        return safe
    return wrap
