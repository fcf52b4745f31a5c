"""Checker for the fill-in exercise of notebook 01: the group-relative advantages of one group, by hand.

Exercise 1.1 asks for A_i = (r_i - mean(r)) / (std(r) + 1e-4) with the *sample* std (divide by G - 1, as the
tutorial, TRL and `torch.std` do) for one group r of shape (G,). The reference is the tested library function,
`group_advantages(r[None])[0]`. The checker names the plausible mistakes: the population std (divide by G,
`numpy.std`'s default), no floor (0 / 0 on a group whose rewards are all equal), only centring, only scaling.

Taught in: notebooks/01_worked_example_2plus3.ipynb
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from grpo_lib.advantages import group_advantages
from grpo_lib.course.exercises.checking import Case, CheckResult, Rejected, as_tensor, fmt, never_raises, run_cases

GROUP_ADVANTAGE_CASES = (
    ("the 2+3 group r = [1, 0, 2]", (1.0, 0.0, 2.0)),
    ("one right answer of four, r = [1, 0, 0, 0]", (1.0, 0.0, 0.0, 0.0)),
    ("a group of two, r = [0, 2]", (0.0, 2.0)),
    ("a group whose rewards are all equal, r = [2, 2, 2]", (2.0, 2.0, 2.0)),
    ("a group of eight, r = [2, 0, 0, 1, 2, 0, 1, 0]", (2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 1.0, 0.0)),
)
"""(name, rewards) pairs, in the order `check_group_advantages` tries them: the 2+3 group first."""


def _diagnose(r: torch.Tensor, got: torch.Tensor) -> str:
    """A hint that names the mistake, by comparing `got` with the usual wrong formulas."""
    centred = r - r.mean()                                                    # (G,)
    population = group_advantages(r[None], ddof=0)[0]                         # (G,) divide by G
    population_no_floor = group_advantages(r[None], ddof=0, std_floor=0.0)[0] if centred.abs().sum() > 0 else None

    def close(other: torch.Tensor | None) -> bool:
        return other is not None and bool(torch.allclose(got, other, atol=1e-3))

    if close(population) or close(population_no_floor):
        return ("that is the population std (divide by G, numpy.std's default). The exercise asks for the sample "
                "std: divide by G - 1, which is torch.std's default (correction=1). For the 2+3 group the sample "
                "std is exactly 1, the population std sqrt(2/3) = 0.816.")
    if torch.isnan(got).any() or torch.isinf(got).any():
        return ("when every reward in the group is equal the std is 0 and you divide 0 by 0. Add the floor: "
                "divide by std + 1e-4.")
    if torch.allclose(got, torch.zeros_like(got)):
        return "A is not 0 for a group with different rewards: subtract the group mean, then divide by its std."
    if close(centred):
        return "you centred the rewards but did not divide by the std (that is Dr. GRPO's variant, notebook 02)."
    if close(-group_advantages(r[None])[0]):
        return "the sign is flipped: A_i = r_i - mean, so the best answer gets the largest advantage."
    if abs(float(got.sum())) > 1e-3:
        return "subtract the group mean first: every group's advantages sum to 0."
    return "A_i = (r_i - mean(r)) / (r.std() + 1e-4), with torch's default sample std."


def _read(got: Any, case: Case) -> Any:
    value = as_tensor(got)
    if value is None:
        return Rejected("something that is not a tensor", "return A as a tensor of shape (G,).")
    if value.shape != case.expected.shape:
        return Rejected(f"shape {tuple(value.shape)}", "r is one group of shape (G,): return one advantage per "
                        "answer, shape (G,).", expected=f"shape {tuple(case.expected.shape)}")
    return value


@never_raises("1.1")
def check_group_advantages(fn: Callable[[torch.Tensor], Any]) -> CheckResult:
    """Check A_i = (r_i - mean(r)) / (sample std(r) + 1e-4) for one group of rewards r, shape (G,) -> (G,).

    Args:
        fn: the learner's function; it gets a float tensor r of shape (G,) and must return A of shape (G,).

    Returns:
        CheckResult, truthy when every case of `GROUP_ADVANTAGE_CASES` matches `group_advantages` (atol 1e-3).

    Taught in: notebooks/01_worked_example_2plus3.ipynb
    """
    cases = [Case(name, (r,), group_advantages(r[None])[0])                 # (G,) sample std + 1e-4
             for name, r in ((name, torch.tensor(rewards)) for name, rewards in GROUP_ADVANTAGE_CASES)]
    return run_cases(
        fn, cases, exercise="1.1",
        blank_hint="mean = r.mean(), std = r.std() (the sample std), then A = (r - mean) / (std + 1e-4).",
        error_hint="take one group r of shape (G,) and return A of shape (G,).",
        read=_read, matches=lambda got, expected: torch.allclose(got, expected, atol=1e-3),
        hint=lambda case, got: _diagnose(case.args[0], got), show=fmt,
        success="✓ Correct: your advantages match group_advantages (sample std, floor 1e-4) on "
                f"all {len(GROUP_ADVANTAGE_CASES)} groups, and the 2+3 group gets [0, -1, +1].")
