"""Checkers for the fill-in exercises of notebook 03: a strict-format rule (3.1) and the Wilson interval (3.2).

Each `check_*` function runs a learner's function on a few fixed cases, compares it with the tested grpo_lib
answer (`strict_format_reward`, `evaluation.wilson_interval`), prints ✓ or ✗ with the first failing case and a
hint, and returns a `CheckResult` that is truthy when every case passed. A checker never raises: a student copy
whose exercise cells still hold the placeholder (`raise NotImplementedError("Exercise 3.1")`) runs green under
nbmake and reports "✗ Not yet: Exercise 3.1 is not filled in yet" with a hint. The shared loop is
`grpo_lib.course.exercises.checking.run_cases`.

Taught in: notebooks/03_reward_design.ipynb
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from grpo_lib.course.exercises.checking import Case, CheckResult, Rejected, never_raises, run_cases
from grpo_lib.evaluation import wilson_interval
from grpo_lib.rewards import strict_format_reward

STRICT_FORMAT_CASES = (
    ("a well-formed completion", "<reasoning>16 - 3 - 4 = 9, 9 * 2 = 18</reasoning>\n<answer>18</answer>"),
    ("reasoning that spans several lines",
     "<reasoning>\n16 - 3 - 4 = 9 eggs.\n9 * 2 = 18 dollars.\n</reasoning>\n<answer>\n18\n</answer>\n"),
    ("four empty tags", "<reasoning></reasoning><answer></answer>"),
    ("text after </answer>", "<reasoning>9 * 2 = 18</reasoning>\n<answer>18</answer>\nHuman: and now?"),
    ("two answer tags", "<reasoning>9 * 2 = 18</reasoning>\n<answer>18</answer><answer>19</answer>"),
    ("tags in the wrong order", "<answer>18</answer>\n<reasoning>9 * 2 = 18</reasoning>"),
    ("no tags at all", "She makes 9 * 2 = 18 dollars. #### 18"),
    ("the prompt's placeholder", "<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"),
)
"""(name, completion text) pairs on which `check_strict_format` compares a learner's rule with the library."""

_STRICT_FORMAT_HINTS = {
    "reasoning that spans several lines": "'.' in a regular expression does not match a newline: use "
                                          "re.DOTALL (or [\\s\\S]), or find the tags with str.find.",
    "four empty tags": "the contents must not be empty: this is exactly the hack the lenient reward pays for.",
    "text after </answer>": "only whitespace may follow </answer>: anchor the end of the text (\\Z or $).",
    "two answer tags": "each tag must appear exactly once (text.count(tag) == 1).",
    "tags in the wrong order": "<reasoning> ... </reasoning> must come before <answer> ... </answer>.",
    "the prompt's placeholder": "'...' is the system prompt's placeholder, not a real answer.",
}


def _read_bool(got: Any, case: Case) -> Any:
    try:
        return bool(got)
    except Exception:  # noqa: BLE001 - e.g. a tensor with several values
        return Rejected(repr(got)[:80], "return True or False for a completion text.")


@never_raises("3.1")
def check_strict_format(fn: Callable[[str], Any]) -> CheckResult:
    """Check a strict-format rule fn(text) -> True/False (or 0.8/0.0) against `strict_format_reward`.

    Taught in: notebooks/03_reward_design.ipynb
    """
    kinds = {}
    cases = []
    for kind, text in STRICT_FORMAT_CASES:
        case = Case(f"{kind} {text!r}", (text,), strict_format_reward([[{"content": text}]])[0] > 0)
        kinds[case.name] = kind
        cases.append(case)
    return run_cases(
        fn, cases, exercise="3.1",
        blank_hint="one <reasoning>…</reasoning> then one <answer>…</answer>, non-empty, nothing but whitespace "
                   "around them; mind newlines.",
        error_hint="return True or False for a completion text.",
        read=_read_bool, matches=lambda got, expected: got == expected,
        hint=lambda case, got: _STRICT_FORMAT_HINTS.get(kinds[case.name], "one <reasoning>…</reasoning> then one "
                                                       "<answer>…</answer>, non-empty, nothing but whitespace around "
                                                       "them."),
        show=str,
        success=f"✓ Correct: your rule agrees with strict_format_reward on all {len(STRICT_FORMAT_CASES)} cases.")


WILSON_CASES = ((7, 30), (27, 30), (0, 10), (30, 30), (660, 1319))
"""(k, n) pairs on which `check_wilson_interval` compares a learner's interval with the library's."""


def _read_pair(got: Any, case: Case) -> Any:
    try:
        low, high = (float(v) for v in got)
    except (TypeError, ValueError, RuntimeError):
        return Rejected(repr(got)[:80], "return a pair (low, high) of floats.")
    return low, high


def _wilson_hint(case: Case, got: tuple[float, float]) -> str:
    (k, n), (low, high) = case.args, got
    p = k / n
    wald = 1.96 * math.sqrt(p * (1 - p) / n)
    if math.isclose(low, p - wald, abs_tol=5e-4) or math.isclose(high, p + wald, abs_tol=5e-4):
        return ("that is the normal (Wald) interval p ± 1.96·√(p(1-p)/n); it collapses to a point at "
                "k = 0 or k = n. Wilson's centre is pulled towards 1/2.")
    if low > high:
        return "return (low, high) in that order."
    return "centre = (p + z²/2n)/(1 + z²/n), half-width = z·√(p(1-p)/n + z²/4n²)/(1 + z²/n), z = 1.96."


@never_raises("3.2")
def check_wilson_interval(fn: Callable[[int, int], tuple[float, float]]) -> CheckResult:
    """Check a 95% Wilson interval fn(k, n) -> (low, high) against `grpo_lib.evaluation.wilson_interval`.

    Taught in: notebooks/03_reward_design.ipynb
    """
    cases = [Case(f"k = {k}, n = {n}", (k, n), wilson_interval(k, n)) for k, n in WILSON_CASES]
    return run_cases(
        fn, cases, exercise="3.2",
        blank_hint="centre = (p + z²/2n)/(1 + z²/n), half-width = z·√(p(1-p)/n + z²/4n²)/(1 + z²/n), z = 1.96, "
                   "p = k/n.",
        error_hint="return a pair (low, high).",
        read=_read_pair,
        matches=lambda got, expected: (math.isclose(got[0], expected[0], abs_tol=5e-4)
                                       and math.isclose(got[1], expected[1], abs_tol=5e-4)),
        hint=_wilson_hint, show=lambda pair: f"({pair[0]:.4f}, {pair[1]:.4f})",
        success="✓ Correct: your interval matches the Wilson score interval.")
