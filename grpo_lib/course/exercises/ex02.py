"""Checkers for the fill-in exercises of notebook 02: centred advantages (2.1) and the zero-std probability (2.2).

Each `check_*` function runs a learner's function on a few fixed cases (and one random batch), compares
it with the tested grpo_lib answer, prints ✓ or ✗ with the first failing case and a hint, and returns a
`CheckResult` that is truthy when every case passed. A checker never raises: a student copy whose exercise
cells still hold the placeholder (`raise NotImplementedError("Exercise 2.1")`) runs green under nbmake and
reports "✗ Not yet: Exercise 2.1 is not filled in yet" with a hint. The shared loop is
`grpo_lib.course.exercises.checking.run_cases`.

The reference answers are the library's own function (`group_advantages`) or a closed form written here once
(`zero_std_probability`), so the solution to an exercise is always something a learner can open and read.

Taught in: notebooks/02_advantages.ipynb
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from grpo_lib.advantages import group_advantages
from grpo_lib.course.exercises.checking import Case, CheckResult, Rejected, as_tensor, fmt, never_raises, run_cases


def _centred_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    cases = [
        ("r = [[1, 0, 0, 0]]", torch.tensor([[1.0, 0.0, 0.0, 0.0]])),
        ("the 2+3 group r = [[1, 0, 2]]", torch.tensor([[1.0, 0.0, 2.0]])),
        ("r = [[1, 0, 0, 0], [1, 1, 1, 0]] (two groups)", torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])),
        ("an all-equal group r = [[2, 2, 2, 2]]", torch.tensor([[2.0, 2.0, 2.0, 2.0]])),
        ("a random batch of shape (5, 6)", torch.randint(0, 3, (5, 6), generator=g).float()),
    ]
    return [Case(name, (r,), group_advantages(r, scale="none")) for name, r in cases]   # (N, G)


def _read_centred(got: Any, case: Case) -> Any:
    value = as_tensor(got)
    if value is None:
        return Rejected("something that is not a tensor", "return a tensor A of shape (N, G), the same shape as r.")
    if value.shape != case.expected.shape:
        return Rejected(f"shape {tuple(value.shape)}", "keep the (N, 1) shape of the mean with keepdim=True so it "
                        "broadcasts over each row.", expected=f"shape {tuple(case.expected.shape)}")
    return value


def _centred_hint(case: Case, got: torch.Tensor) -> str:
    r = case.args[0]
    if torch.allclose(got, torch.zeros_like(got)):
        return "subtract each row's mean: r - r.mean(dim=-1, keepdim=True)."
    if torch.allclose(got, r - r.mean(), atol=1e-5):
        return "use each group's own mean (dim=-1), not the mean of the whole batch."
    if torch.allclose(got, group_advantages(r, scale="group"), atol=1e-4) or torch.allclose(
            got, group_advantages(r, scale="group", ddof=0), atol=1e-4):
        return "Dr. GRPO only centres the rewards: do not divide by the std."
    return "A_i = r_i - mean(r_1..r_G), one mean per row; every row of A sums to 0."


@never_raises("2.1")
def check_centered_advantages(fn: Callable[[torch.Tensor], Any]) -> CheckResult:
    """Check A_i = r_i - mean(r) per group (Dr. GRPO, scale="none") for rewards r of shape (N, G).

    Reference: `group_advantages(r, scale="none")`.

    Taught in: notebooks/02_advantages.ipynb
    """
    return run_cases(
        fn, _centred_cases(), exercise="2.1",
        blank_hint="subtract each row's own mean: r - r.mean(dim=-1, keepdim=True).",
        error_hint=lambda error: ("the mean of each row has shape (N,); keep it (N, 1) with keepdim=True so it "
                                  "broadcasts over the G columns." if "size of tensor" in error else
                                  "take r (N, G) and return a tensor of the same shape."),
        read=_read_centred, matches=lambda got, expected: torch.allclose(got, expected, atol=1e-5),
        hint=_centred_hint, show=fmt,
        success="✓ Correct: your centred advantages match group_advantages(r, scale='none').")


def zero_std_probability(p: float, G: int) -> float:
    """P(all G rewards equal) for G independent right/wrong answers with success rate p: p^G + (1-p)^G.

    Used by: `check_zero_std_probability` (exercise 2.2)
    """
    return p**G + (1 - p) ** G


ZERO_STD_CASES = ((0.3, 4), (0.8, 3), (0.5, 2), (0.1, 8), (0.9, 16), (0.0, 4))
"""(p, G) pairs, in the order `check_zero_std_probability` tries them: both terms matter first."""


def _read_float(got: Any, case: Case) -> Any:
    try:
        return float(got)
    except (TypeError, ValueError, RuntimeError):
        return Rejected(repr(got)[:80], "return a single number (a float).")


def _zero_std_hint(case: Case, got: float) -> str:
    p, G = case.args
    if math.isclose(got, p**G, rel_tol=1e-6, abs_tol=1e-12):
        return "p^G counts only 'all right'; a group that is all wrong has std 0 too."
    if math.isclose(got, (1 - p) ** G, rel_tol=1e-6, abs_tol=1e-12):
        return "(1-p)^G counts only 'all wrong'; a group that is all right has std 0 too."
    return "the G answers are independent: P(all right) = p^G, P(all wrong) = (1-p)^G."


@never_raises("2.2")
def check_zero_std_probability(fn: Callable[[float, int], float]) -> CheckResult:
    """Check the probability that a group of G Bernoulli(p) rewards has std 0 (all right or all wrong).

    Taught in: notebooks/02_advantages.ipynb
    """
    cases = [Case(f"p = {p}, G = {G}", (p, G), zero_std_probability(p, G)) for p, G in ZERO_STD_CASES]
    return run_cases(
        fn, cases, exercise="2.2",
        blank_hint="a group has std 0 when all G answers are right or all are wrong; the answers are independent.",
        error_hint="return a float for a success rate p and a group size G.",
        read=_read_float, matches=lambda got, expected: math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9),
        hint=_zero_std_hint, show=lambda x: f"{x:.6f}",
        success="✓ Correct: P(std = 0) = p^G + (1-p)^G.")
