"""Checkers for the fill-in exercises of notebooks 02 and 03.

Each `check_*` function runs a learner's function on a few fixed cases (and one random batch), compares
it with the tested grpo_lib answer, prints ✓ or ✗ with the first failing case and a hint, and returns a
`CheckResult` that is truthy when every case passed. A checker never raises: a student copy whose exercise
cells still hold the placeholder (`raise NotImplementedError("Exercise 2.1")`) runs green under nbmake and
reports "✗ Not yet: Exercise 2.1 is not filled in yet" with a hint. The shared machinery is in grpo_lib.checks.

The reference answers are the library's own functions (`group_advantages`, `strict_format_reward`,
`evaluation.wilson_interval`) or a closed form written here once (`zero_std_probability`), so the solution
to an exercise is always something a learner can open and read.

Taught in: notebooks/02_advantages.ipynb, notebooks/03_reward_design.ipynb
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from grpo_lib.advantages import group_advantages
from grpo_lib.checks import (CheckResult, as_tensor, call, exercise_of, fail, fmt, is_unfilled, never_raises, not_yet,
                             report)
from grpo_lib.evaluation import wilson_interval
from grpo_lib.rewards import strict_format_reward


# The shared machinery lives in grpo_lib.checks; the old private names stay importable from here.
_report, _fail, _call, _fmt = report, fail, call, fmt


# --- notebook 02 ----------------------------------------------------------------------------------


@never_raises("2.1")
def check_centered_advantages(fn: Callable[[torch.Tensor], Any]) -> CheckResult:
    """Check A_i = r_i - mean(r) per group (Dr. GRPO, scale="none") for rewards r of shape (N, G).

    Reference: `group_advantages(r, scale="none")`.

    Taught in: notebooks/02_advantages.ipynb
    """
    g = torch.Generator().manual_seed(0)
    cases = [
        ("r = [[1, 0, 0, 0]]", torch.tensor([[1.0, 0.0, 0.0, 0.0]])),
        ("the 2+3 group r = [[1, 0, 2]]", torch.tensor([[1.0, 0.0, 2.0]])),
        ("r = [[1, 0, 0, 0], [1, 1, 1, 0]] (two groups)", torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])),
        ("an all-equal group r = [[2, 2, 2, 2]]", torch.tensor([[2.0, 2.0, 2.0, 2.0]])),
        ("a random batch of shape (5, 6)", torch.randint(0, 3, (5, 6), generator=g).float()),
    ]
    for name, r in cases:
        expected = group_advantages(r, scale="none")                       # (N, G)
        got, error = _call(fn, r.clone())
        if is_unfilled(error):
            return not_yet(exercise_of(error, "2.1"), "subtract each row's own mean: r - r.mean(dim=-1, keepdim=True).")
        if error:
            hint = ("the mean of each row has shape (N,); keep it (N, 1) with keepdim=True so it broadcasts over "
                    "the G columns." if "size of tensor" in error else
                    "take r (N, G) and return a tensor of the same shape.")
            return _fail(name, _fmt(expected), error, hint)
        got = as_tensor(got)
        if got is None:
            return _fail(name, _fmt(expected), "something that is not a tensor",
                         "return a tensor A of shape (N, G), the same shape as r.")
        if got.shape != expected.shape:
            return _fail(name, f"shape {tuple(expected.shape)}", f"shape {tuple(got.shape)}",
                         "keep the (N, 1) shape of the mean with keepdim=True so it broadcasts over each row.")
        if torch.allclose(got, expected, atol=1e-5):
            continue
        if torch.allclose(got, torch.zeros_like(got)):
            hint = "subtract each row's mean: r - r.mean(dim=-1, keepdim=True)."
        elif torch.allclose(got, r - r.mean(), atol=1e-5):
            hint = "use each group's own mean (dim=-1), not the mean of the whole batch."
        elif torch.allclose(got, group_advantages(r, scale="group"), atol=1e-4) or torch.allclose(
                got, group_advantages(r, scale="group", ddof=0), atol=1e-4):
            hint = "Dr. GRPO only centres the rewards: do not divide by the std."
        else:
            hint = "A_i = r_i - mean(r_1..r_G), one mean per row; every row of A sums to 0."
        return _fail(name, _fmt(expected), _fmt(got), hint)
    return _report(True, "✓ Correct: your centred advantages match group_advantages(r, scale='none').")


def zero_std_probability(p: float, G: int) -> float:
    """P(all G rewards equal) for G independent right/wrong answers with success rate p: p^G + (1-p)^G.

    Taught in: notebooks/02_advantages.ipynb
    """
    return p**G + (1 - p) ** G


@never_raises("2.2")
def check_zero_std_probability(fn: Callable[[float, int], float]) -> CheckResult:
    """Check the probability that a group of G Bernoulli(p) rewards has std 0 (all right or all wrong).

    Taught in: notebooks/02_advantages.ipynb
    """
    for p, G in [(0.3, 4), (0.8, 3), (0.5, 2), (0.1, 8), (0.9, 16), (0.0, 4)]:   # both terms matter first
        expected = zero_std_probability(p, G)
        got, error = _call(fn, p, G)
        name = f"p = {p}, G = {G}"
        if is_unfilled(error):
            return not_yet(exercise_of(error, "2.2"), "a group has std 0 when all G answers are right or all are "
                                                      "wrong; the answers are independent.")
        if error:
            return _fail(name, f"{expected:.6f}", error, "return a float for a success rate p and a group size G.")
        try:
            got = float(got)
        except (TypeError, ValueError, RuntimeError):
            return _fail(name, f"{expected:.6f}", repr(got)[:80], "return a single number (a float).")
        if math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9):
            continue
        if math.isclose(got, p**G, rel_tol=1e-6, abs_tol=1e-12):
            hint = "p^G counts only 'all right'; a group that is all wrong has std 0 too."
        elif math.isclose(got, (1 - p) ** G, rel_tol=1e-6, abs_tol=1e-12):
            hint = "(1-p)^G counts only 'all wrong'; a group that is all right has std 0 too."
        else:
            hint = "the G answers are independent: P(all right) = p^G, P(all wrong) = (1-p)^G."
        return _fail(name, f"{expected:.6f}", f"{got:.6f}", hint)
    return _report(True, "✓ Correct: P(std = 0) = p^G + (1-p)^G.")


# --- notebook 03 ----------------------------------------------------------------------------------

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


@never_raises("3.1")
def check_strict_format(fn: Callable[[str], Any]) -> CheckResult:
    """Check a strict-format rule fn(text) -> True/False (or 0.8/0.0) against `strict_format_reward`.

    Taught in: notebooks/03_reward_design.ipynb
    """
    hints = {
        "reasoning that spans several lines": "'.' in a regular expression does not match a newline: use "
                                              "re.DOTALL (or [\\s\\S]), or find the tags with str.find.",
        "four empty tags": "the contents must not be empty: this is exactly the hack the lenient reward pays for.",
        "text after </answer>": "only whitespace may follow </answer>: anchor the end of the text (\\Z or $).",
        "two answer tags": "each tag must appear exactly once (text.count(tag) == 1).",
        "tags in the wrong order": "<reasoning> ... </reasoning> must come before <answer> ... </answer>.",
        "the prompt's placeholder": "'...' is the system prompt's placeholder, not a real answer.",
    }
    for name, text in STRICT_FORMAT_CASES:
        expected = strict_format_reward([[{"content": text}]])[0] > 0
        got, error = _call(fn, text)
        if is_unfilled(error):
            return not_yet(exercise_of(error, "3.1"), "one <reasoning>…</reasoning> then one <answer>…</answer>, "
                                                      "non-empty, nothing but whitespace around them; mind newlines.")
        if error:
            return _fail(f"{name} {text!r}", expected, error, "return True or False for a completion text.")
        try:
            got = bool(got)
        except Exception:  # noqa: BLE001 - e.g. a tensor with several values
            return _fail(f"{name} {text!r}", expected, repr(got)[:80], "return True or False for a completion text.")
        if got != expected:
            hint = hints.get(name, "one <reasoning>…</reasoning> then one <answer>…</answer>, non-empty, "
                                   "nothing but whitespace around them.")
            return _fail(f"{name} {text!r}", expected, got, hint)
    return _report(True, f"✓ Correct: your rule agrees with strict_format_reward on all "
                         f"{len(STRICT_FORMAT_CASES)} cases.")


@never_raises("3.2")
def check_wilson_interval(fn: Callable[[int, int], tuple[float, float]]) -> CheckResult:
    """Check a 95% Wilson interval fn(k, n) -> (low, high) against `grpo_lib.evaluation.wilson_interval`.

    Taught in: notebooks/03_reward_design.ipynb
    """
    for k, n in [(7, 30), (27, 30), (0, 10), (30, 30), (660, 1319)]:
        expected = wilson_interval(k, n)
        got, error = _call(fn, k, n)
        name = f"k = {k}, n = {n}"
        shown = f"({expected[0]:.4f}, {expected[1]:.4f})"
        if is_unfilled(error):
            return not_yet(exercise_of(error, "3.2"), "centre = (p + z²/2n)/(1 + z²/n), half-width = "
                                                      "z·√(p(1-p)/n + z²/4n²)/(1 + z²/n), z = 1.96, p = k/n.")
        if error:
            return _fail(name, shown, error, "return a pair (low, high).")
        try:
            low, high = (float(v) for v in got)
        except (TypeError, ValueError, RuntimeError):
            return _fail(name, shown, repr(got)[:80], "return a pair (low, high) of floats.")
        if math.isclose(low, expected[0], abs_tol=5e-4) and math.isclose(high, expected[1], abs_tol=5e-4):
            continue
        p = k / n
        wald = 1.96 * math.sqrt(p * (1 - p) / n)
        if math.isclose(low, p - wald, abs_tol=5e-4) or math.isclose(high, p + wald, abs_tol=5e-4):
            hint = ("that is the normal (Wald) interval p ± 1.96·√(p(1-p)/n); it collapses to a point at "
                    "k = 0 or k = n. Wilson's centre is pulled towards 1/2.")
        elif low > high:
            hint = "return (low, high) in that order."
        else:
            hint = "centre = (p + z²/2n)/(1 + z²/n), half-width = z·√(p(1-p)/n + z²/4n²)/(1 + z²/n), z = 1.96."
        return _fail(name, shown, f"({low:.4f}, {high:.4f})", hint)
    return _report(True, "✓ Correct: your interval matches the Wilson score interval.")
