"""What every exercise checker shares: the result object, the ✓/✗ messages, safe calls into learner code, and
the one loop over cases (`run_cases`) that every checker runs.

The exercise convention of the course (docs/teaching.md has the instructor's side of it):

- An instructor notebook holds the reference solution of a fill-in exercise between `### BEGIN SOLUTION` and
  `### END SOLUTION` in a code cell tagged "solution"; `scripts/build_notebooks.py` replaces that region
  by `raise NotImplementedError("Exercise N.K")` in the student copy.
- A checker (`check_*` in `grpo_lib.course.exercises.ex01` ... `ex06`, one module per notebook) runs the
  learner's function on a few fixed cases (`run_cases`), compares it with a tested reference, prints one
  message and returns a `CheckResult` that is truthy only when every case passed:

      ✓ Correct: ...
      ✗ Not yet. For <case> expected <value>, got <value>.
        Hint: ...
      ✗ Not yet: Exercise N.K is not filled in yet.
        Hint: ...

- A checker never raises, whatever the learner's function does (raises, returns None, a string, a tensor of
  the wrong shape, NaN): a student copy with every exercise still blank runs top to bottom under nbmake.
- Hints are progressive for a checker that passes `run_cases(..., key_step=...)`: every "not yet"
  names the failing case and gives a nudge toward the idea, never the formula; the key step (the formula or
  line that answers the exercise) is printed only by `hint("N.K")` (its first call gives the nudge, the second
  the key step) or after `SHOW_KEY_STEP_AFTER` wrong answers. A blank exercise is not a wrong answer, so Run All
  on a student copy shows no answer.
- A checker whose exercise the library already answers passes `run_cases(..., references=...)`: a learner's
  function that is, wraps or calls one of those functions gets "✗ Not yet" naming it (`calls_reference`).

Used by: every checker of grpo_lib.course.exercises (ex01 ... ex06), in each notebook's "Exercises" section.
"""

from __future__ import annotations

import functools
import re
import types
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


SHOW_KEY_STEP_AFTER = 3
"""Wrong answers (not blanks) to one exercise after which its key step is printed without being asked for."""

KEY_STEPS: dict[str, tuple[str, str]] = {}
"""exercise "N.K" -> (nudge, key step), registered by `run_cases(..., key_step=...)` and `register_hints`."""

_wrong_answers: dict[str, int] = {}


def register_hints(exercise: str, nudge: str, key_step: str) -> None:
    """Make `hint("N.K")` work before the exercise's checker has run once."""
    KEY_STEPS[exercise] = (nudge, key_step)


_hints_shown: dict[str, int] = {}


def hint(exercise: str, level: int | None = None) -> str:
    """Print (and return) exercise N.K's hint: level 1 the nudge, level 2 the key step.

    Without `level`, the first call for an exercise gives level 1 (the nudge) and every later call level 2 (the
    key step), so asking once never gives the answer away. The key step is the formula or the line that answers
    the exercise; a checker prints it by itself only after `SHOW_KEY_STEP_AFTER` wrong answers, so Run All on a
    student copy never shows it.
    """
    if exercise not in KEY_STEPS:
        text = f"No hints for exercise {exercise!r}; exercises with hints: {', '.join(sorted(KEY_STEPS)) or 'none yet'}."
    elif level is not None and level not in (1, 2):
        text = f"level must be 1 (a nudge) or 2 (the key step), got {level!r}."
    else:
        if level is None:
            level = 1 if _hints_shown.get(exercise, 0) == 0 else 2
        _hints_shown[exercise] = _hints_shown.get(exercise, 0) + 1
        text = f"Exercise {exercise}, hint {level}: {KEY_STEPS[exercise][level - 1]}"
        if level == 1:
            text += f'\n  (hint("{exercise}") again gives the key step.)'
    print(text)
    return text


def reset_attempts(exercise: str | None = None) -> None:
    """Forget the wrong-answer counts and the hints shown (all of them, or one exercise's)."""
    if exercise is None:
        _wrong_answers.clear()
        _hints_shown.clear()
    else:
        _wrong_answers.pop(exercise, None)
        _hints_shown.pop(exercise, None)


def _with_key_step(exercise: str, message: str, wrong: bool) -> str:
    """Append the key step after repeated wrong answers, else the pointer to `hint("N.K")`."""
    if exercise not in KEY_STEPS:
        return message
    if wrong:
        _wrong_answers[exercise] = _wrong_answers.get(exercise, 0) + 1
        n = _wrong_answers[exercise]
        if n >= SHOW_KEY_STEP_AFTER:
            return f"{message}\n  Wrong answer {n}, so here is the key step: {KEY_STEPS[exercise][1]}"
    return f'{message}\n  (hint("{exercise}") gives a nudge, and a second call the key step, when you want them.)'


def _code_names(code: Any) -> set[str]:
    """Every global or attribute name a code object (and the functions, lambdas and classes inside it) uses."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _code_names(const)
    return names


def calls_reference(fn: Any, references: Iterable[Callable], _seen: set[int] | None = None) -> str | None:
    """The name of a reference answer that `fn` is, wraps or calls; None when it does none of these.

    An exercise asks the learner to write a function the library already has (the notebook imports it for other
    cells). This finds the shortcut of handing the library's function in: `fn` is a reference (or has its code),
    wraps one (`functools.wraps`, `functools.partial`, a closure, a default argument), or calls one by name,
    directly, under another name bound to it, as a module attribute (`grpo_lib.rewards.strict_format_reward`), or
    through a helper function of the learner's that does (followed to any depth). A name bound to something else
    (the learner's own function called `completion_mask`) is followed, not flagged. Indirect routes (`getattr`
    with a computed name, `eval`) are not detected: this stops the accidental shortcut, not a determined one.

    Args:
        fn: the learner's function.
        references: the library functions that answer the exercise.

    Returns:
        the reference's `__name__`, or None.
    """
    refs = [r for r in references if callable(r)]
    by_code = {id(getattr(r, "__code__", None)): r.__name__ for r in refs if hasattr(r, "__code__")}
    by_obj = {id(r): r.__name__ for r in refs}
    ref_names = {r.__name__ for r in refs}
    seen = set() if _seen is None else _seen
    if id(fn) in seen:
        return None
    seen.add(id(fn))
    if id(fn) in by_obj:
        return by_obj[id(fn)]
    if isinstance(fn, functools.partial):
        return calls_reference(fn.func, refs, seen)
    if getattr(fn, "__wrapped__", None) is not None:
        found = calls_reference(fn.__wrapped__, refs, seen)
        if found:
            return found
    fn = getattr(fn, "__func__", fn)                                   # a bound method: its function
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    if id(code) in by_code:
        return by_code[id(code)]
    inner = [c.cell_contents for c in (fn.__closure__ or ()) if _has_contents(c)]
    inner += list(fn.__defaults__ or ()) + list((fn.__kwdefaults__ or {}).values())
    glob = getattr(fn, "__globals__", {})
    builtins = glob.get("__builtins__", {})
    builtins = builtins if isinstance(builtins, dict) else vars(builtins)
    for name in sorted(_code_names(code)):
        if name in glob:
            inner.append(glob[name])
        elif name in ref_names and name not in builtins:               # an attribute: module.reference(...)
            return name
    for obj in inner:
        if id(obj) in by_obj:
            return by_obj[id(obj)]
        if _is_learners(obj):
            found = calls_reference(obj, refs, seen)                    # the learner's own helper: follow it
            if found:
                return found
    return None


def _is_learners(obj: Any) -> bool:
    """True for a Python function (or partial) written outside grpo_lib and outside installed packages."""
    if isinstance(obj, functools.partial):
        return True
    if not isinstance(obj, (types.FunctionType, types.MethodType)):
        return False
    module = str(getattr(obj, "__module__", "") or "")
    filename = getattr(getattr(getattr(obj, "__func__", obj), "__code__", None), "co_filename", "")
    return not module.startswith("grpo_lib") and "site-packages" not in filename and "/lib/python" not in filename


def _has_contents(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:                                                  # an empty cell (a name not yet bound)
        return False
    return True


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


ERROR_HINT = "your function raised; read the exercise's signature again: what goes in, and what must come back."
"""the `error_hint` of the issue-12 checkers: what to do when the learner's function raises"""


def read_tensor(got: Any, case: Case) -> Any:
    """A `read` for run_cases: the answer as a tensor of the expected shape, else a Rejected naming what came."""
    value = as_tensor(got)
    if value is None:
        return Rejected("something that is not a tensor", "return a tensor.")
    if value.shape != case.expected.shape:
        return Rejected(f"shape {tuple(value.shape)}", "check the shape the exercise asks for.",
                        expected=f"shape {tuple(case.expected.shape)}")
    return value


def read_number(got: Any, case: Case) -> Any:
    """A `read` for run_cases: the answer as one float (a number or a one-element tensor), else a Rejected."""
    value = as_tensor(got)
    if value is None or value.numel() != 1 or isinstance(got, bool):
        return Rejected(repr(got)[:60], "return one number.")
    return float(value.reshape(-1)[0])


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
              success: str, show_got: Callable[[Any], str] | None = None,
              key_step: str | None = None, references: Iterable[Callable] = ()) -> CheckResult:
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
        key_step: the formula or line that answers the exercise (progressive hints). When given,
            `blank_hint` must be a nudge that does not give it away; the key step is printed only by
            `hint("N.K")` (its second call) or after `SHOW_KEY_STEP_AFTER` wrong answers (a blank exercise is
            not one).
        references: the library functions that answer the exercise. A learner's function that is, wraps or
            calls one of them (`calls_reference`) is not checked: it gets "✗ Not yet" naming the function.

    Returns:
        the printed `CheckResult`, truthy only when every case passed.
    """
    show_got = show_got or show
    if key_step is not None:
        KEY_STEPS[exercise] = (blank_hint, key_step)

    def say(message: str, wrong: bool) -> CheckResult:
        return report(False, _with_key_step(exercise, message, wrong))

    used = calls_reference(fn, references) if references else None
    if used:
        return say(f"✗ Not yet: your function calls `{used}`, the library's answer to Exercise {exercise}. "
                   f"Write it yourself; compare with `{used}` afterwards.\n"
                   f"  Hint: {blank_hint}", wrong=False)
    for case in cases:
        got, error = call(fn, *_fresh(case.args))
        if is_unfilled(error):
            return say(f"✗ Not yet: Exercise {exercise_of(error, exercise)} is not filled in yet.\n  Hint: {blank_hint}",
                       wrong=False)
        if error:
            hint_text = error_hint(error) if callable(error_hint) else error_hint
            return say(f"✗ Not yet. For {case.name} expected {show(case.expected)}, got {error}.\n  Hint: {hint_text}",
                       wrong=True)
        value = read(got, case)
        if isinstance(value, Rejected):
            expected = show(case.expected) if value.expected is None else value.expected
            return say(f"✗ Not yet. For {case.name} expected {expected}, got {value.got}.\n  Hint: {value.hint}",
                       wrong=True)
        if not matches(value, case.expected):
            return say(f"✗ Not yet. For {case.name} expected {show(case.expected)}, got {show_got(value)}.\n"
                       f"  Hint: {hint(case, value)}", wrong=True)
    return report(True, success)
