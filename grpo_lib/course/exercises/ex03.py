"""Checkers for the fill-in exercises of notebook 03: a strict-format rule (3.1) and Fisher's exact test (3.2).

Each `check_*` function runs a learner's function on a few fixed cases, compares it with the tested grpo_lib
answer (`strict_format_reward`, `course.evaluation.fisher_exact_2x2`), prints ✓ or ✗ with the first failing case and a
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
from grpo_lib.course.exercises.checking import ERROR_HINT, read_number as _one_number
from grpo_lib.course.evaluation import fisher_exact_2x2
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
        show=str, references=(strict_format_reward,),
        success=f"✓ Correct: your rule agrees with strict_format_reward on all {len(STRICT_FORMAT_CASES)} cases.")


FISHER_NUDGE = ("fix the totals: k1 + k2 right answers among n1 + n2 tries. If both had the same accuracy, how "
                "likely is each way of splitting the right answers between the two samples? How surprising is "
                "the split you saw?")
FISHER_KEY = ("P(x) = comb(n1, x) * comb(n2, K - x) / comb(n1 + n2, K) with K = k1 + k2; the p-value is the sum "
              "of P(x) over every x with P(x) <= P(k1).")


def _fisher_hint(case: Case, value: float) -> str:
    k1, n1, k2, n2 = case.args
    K, N = k1 + k2, n1 + n2
    pmf = {x: math.comb(n1, x) * math.comb(n2, K - x) / math.comb(N, K) for x in range(max(0, K - n2), min(n1, K) + 1)}
    if math.isclose(value, pmf[k1], abs_tol=1e-4):
        return "that is the chance of exactly the split you saw; the p-value also counts the splits that are no more likely."
    if any(math.isclose(value, sum(p for x, p in pmf.items() if side(x)), abs_tol=1e-4)
           for side in (lambda x: x <= k1, lambda x: x >= k1)):
        return "that is one-sided; the question is whether the two differ in either direction."
    return "fix the totals and count how likely each split of the right answers is, if both accuracies were equal."


def _scipy_fisher() -> tuple:
    """scipy.stats.fisher_exact when scipy is installed: a learner may reach for it instead of the idea."""
    try:
        from scipy.stats import fisher_exact  # optional: only to recognise it in a learner's answer
    except ImportError:
        return ()
    return (fisher_exact,)


FISHER_REFERENCES = (fisher_exact_2x2, *_scipy_fisher())
"""what answers exercise 3.2 already: the library's test (and scipy's, when installed)"""


@never_raises("3.2")
def check_fisher(fn: Callable[[int, int, int, int], Any]) -> CheckResult:
    """Exercise 3.2: the two-sided Fisher exact test p-value."""
    cases = [Case(name, args, fisher_exact_2x2(*args)) for name, args in (
        ("7 of 9 vs 27 of 30 (the tutorial, tagged answers before vs after)", (7, 9, 27, 30)),
        ("5 of 10 vs 5 of 10", (5, 10, 5, 10)), ("1 of 10 vs 9 of 10", (1, 10, 9, 10)),
        ("27 of 30 vs 7 of 9 (the same two, swapped)", (27, 30, 7, 9)))]
    return run_cases(fn, cases, exercise="3.2", blank_hint=FISHER_NUDGE, key_step=FISHER_KEY, error_hint=ERROR_HINT,
                     read=_one_number, matches=lambda got, exp: math.isclose(got, exp, abs_tol=1e-4),
                     hint=_fisher_hint, show=lambda v: f"{v:.4f}", references=FISHER_REFERENCES,
                     success="✓ Correct: 7/9 vs 27/30 gives p = 0.572. Thirty questions cannot tell 78% from 90% apart.")
