"""What every exercise checker shares: the result object, the ✓/✗ messages, safe calls into learner code, and
the one loop over cases (`run_cases`) that every checker runs.

The exercise convention of the course (docs/teaching.md has the instructor's side of it):

- An instructor notebook holds the reference solution of a fill-in exercise between `### BEGIN SOLUTION` and
  `### END SOLUTION` in a code cell tagged "solution"; `scripts/build_notebooks.py` replaces that region
  by `raise NotImplementedError("Exercise N.K")` in the student copy.
- A checker (`check_*` in `grpo_lib.course.exercises.ex01` ... `ex05`, one module per notebook) runs the
  learner's function on a few fixed cases (`run_cases`), compares it with a tested reference, prints one
  message and returns a `CheckResult` that is truthy only when every case passed:

      ✓ Correct: ...
      ✗ Not yet. For <case> expected <value>, got <value>.
        Hint: ...
      ✗ Not yet: Exercise N.K is not filled in yet.
        Hint: ...

- A checker never raises, whatever the learner's function does (raises, returns None, a string, a tensor of
  the wrong shape, NaN): a student copy with every exercise still blank runs top to bottom under nbmake.

Used by: every checker of grpo_lib.course.exercises (ex01 ... ex05), in each notebook's "Exercises" section.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

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


class Case(NamedTuple):
    """One case of a checker: the learner's function is called as fn(*args) and must give `expected`."""

    name: str
    """how a failure names the case: "For <name> expected ..." """
    args: tuple
    """the arguments (tensors, and lists of tensors, are cloned for every call)"""
    expected: Any
    """the reference answer"""


class Rejected(NamedTuple):
    """What `read` returns for an answer of the wrong kind (not a number, a wrong shape): the failure to print."""

    got: str
    hint: str
    expected: str | None = None
    """shown instead of the expected value (e.g. "shape (3,)"); None shows the expected value"""


def _fresh(args: tuple) -> tuple:
    """Copies of the case's tensors (alone or in a list), so a learner's in-place edit cannot change a case."""
    def copy(a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            return a.clone()
        if isinstance(a, list) and all(isinstance(x, torch.Tensor) for x in a):
            return [x.clone() for x in a]
        return a
    return tuple(copy(a) for a in args)


def run_cases(fn: Callable, cases: Iterable[Case], *, exercise: str, blank_hint: str,
              error_hint: str | Callable[[str], str], read: Callable[[Any, Case], Any],
              matches: Callable[[Any, Any], bool], hint: Callable[[Case, Any], str], show: Callable[[Any], str],
              success: str, show_got: Callable[[Any], str] | None = None) -> CheckResult:
    """The loop every checker runs: call the learner's function on each case, stop at the first failure.

    For each case, in order: the placeholder's NotImplementedError gives "✗ Not yet: Exercise N.K is not
    filled in yet" (`blank_hint`); any other exception "✗ Not yet. For <case> expected <value>, got <the
    error>" (`error_hint`); `read(got, case)` turns the answer into a comparable value or returns a
    `Rejected` (not a number, a wrong shape); a value that does not `matches` the expected one gets
    `hint(case, value)`, the checker's diagnosis of the mistake. When every case passed, `success` is printed.

    Args:
        fn: the learner's function.
        cases: the `Case`s, tried in order (the most telling case first).
        exercise: "N.K", used when the placeholder's message does not name it.
        show: formats an expected value for the message; `show_got` (default `show`) formats the learner's.

    Returns:
        the printed `CheckResult`, truthy only when every case passed.
    """
    show_got = show_got or show
    for case in cases:
        got, error = call(fn, *_fresh(case.args))
        if is_unfilled(error):
            return not_yet(exercise_of(error, exercise), blank_hint)
        if error:
            return fail(case.name, show(case.expected), error, error_hint(error) if callable(error_hint) else error_hint)
        value = read(got, case)
        if isinstance(value, Rejected):
            expected = show(case.expected) if value.expected is None else value.expected
            return fail(case.name, expected, value.got, value.hint)
        if not matches(value, case.expected):
            return fail(case.name, show(case.expected), show_got(value), hint(case, value))
    return report(True, success)
