"""Checker for the fill-in exercise of notebook 01: the group-relative advantages of one group, by hand.

Exercise 1.1 asks for A_i = (r_i - mean(r)) / (std(r) + 1e-4) with the *sample* std (divide by G - 1, as the
tutorial, TRL and `torch.std` do) for one group r of shape (G,). The reference is the tested library function,
`group_advantages(r[None])[0]`. The checker names the plausible mistakes: the population std (divide by G,
`numpy.std`'s default), no floor (0 / 0 on a group whose rewards are all equal), only centring, only scaling.

Taught in: notebooks/01_worked_example_2plus3.ipynb
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch

from grpo_lib.advantages import group_advantages
from grpo_lib.course.exercises.checking import (Case, CheckResult, Rejected, as_tensor, fmt, never_raises, report,
                                                run_cases)
from grpo_lib.course.exercises.checking import ERROR_HINT, read_tensor as _tensor_like

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

    Used by: tests/test_course_exercises_ex01.py. Exercise 1.1 of the notebook is now `check_loo_advantages` (issue 12);
    this checker stays for student copies made before.
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

# --- issue 12: exercises that need the idea, with progressive hints (key_step) ---------------------------

LOO_NUDGE = ("each answer's baseline should be the mean reward of the *other* G - 1 answers of its group, so "
             "that r_i never sits in its own baseline.")
LOO_KEY = "A_i = r_i - (r.sum() - r_i) / (G - 1): in one line, r - (r.sum() - r) / (len(r) - 1)."
LOO_REWARDS = (("the 2+3 group r = [1, 0, 2]", (1.0, 0.0, 2.0)),
               ("one right answer of four, r = [1, 0, 0, 0]", (1.0, 0.0, 0.0, 0.0)),
               ("a group of two, r = [0, 2]", (0.0, 2.0)),
               ("a group whose rewards are all equal, r = [2, 2, 2]", (2.0, 2.0, 2.0)),
               ("a group of six, r = [2, 0, 1, 1, 0, 2]", (2.0, 0.0, 1.0, 1.0, 0.0, 2.0)))


def loo_advantages(r: torch.Tensor) -> torch.Tensor:
    """A_i = r_i - mean_{j≠i} r_j for one group r, (G,) -> (G,), G >= 2: the leave-one-out (RLOO) baseline."""
    return r - (r.sum() - r) / (r.numel() - 1)


def expected_estimate(advantage_fn: Callable[[torch.Tensor], Any], logits: torch.Tensor, rewards: torch.Tensor,
                      G: int) -> torch.Tensor:
    """E over all K**G groups of (1/G) Σ_i A_i ∇log softmax(θ)[o_i], computed exactly; (K,)."""
    p = torch.softmax(logits, -1)
    K = p.numel()
    groups = torch.tensor(list(itertools.product(range(K), repeat=G)))        # (K**G, G)
    weights = p[groups].prod(-1)                                              # (K**G,)
    A = torch.stack([torch.as_tensor(advantage_fn(rewards[g].clone()), dtype=torch.float32) for g in groups])
    score = torch.nn.functional.one_hot(groups, K).float() - p                # (K**G, G, K)
    return (weights[:, None] * (A[..., None] * score).mean(1)).sum(0)


def _loo_hint(case: Case, got: torch.Tensor) -> str:
    r = case.args[0]
    if torch.allclose(got, r - r.mean(), atol=1e-6):
        return ("that is the group-mean baseline of the lesson: r_i is still inside its own baseline. What should "
                "answer i be compared with, if not with itself?")
    if torch.allclose(got, group_advantages(r[None])[0], atol=1e-6) or (
            r.unique().numel() > 1 and torch.allclose(got, group_advantages(r[None], std_floor=0.0)[0], atol=1e-6)):
        return "that is GRPO's advantage (divided by the std); this exercise wants a baseline only, no scaling."
    if torch.allclose(got, r - (r.sum() - r) / r.numel(), atol=1e-6):
        return "close: the others are G - 1 answers, so their mean divides by G - 1."
    if torch.allclose(got, -case.expected, atol=1e-6):
        return "the sign is flipped: a reward above its baseline must get a positive advantage."
    return "compare r_i with the mean reward of the other answers of its group."


@never_raises("1.1")
def check_loo_advantages(fn: Callable[[torch.Tensor], Any]) -> CheckResult:
    """Exercise 1.1: advantages with a leave-one-out baseline, (G,) -> (G,); then the exact mean is ∇J."""
    cases = [Case(name, (torch.tensor(r),), loo_advantages(torch.tensor(r))) for name, r in LOO_REWARDS]
    result = run_cases(fn, cases, exercise="1.1", blank_hint=LOO_NUDGE, key_step=LOO_KEY, error_hint=ERROR_HINT,
                       read=_tensor_like, matches=lambda got, exp: bool(torch.allclose(got, exp, atol=1e-4)),
                       hint=_loo_hint, show=fmt,
                       success="✓ Correct: your baseline leaves r_i out of its own comparison.")
    if not result:
        return result
    logits, rewards = torch.tensor([0.5, 0.0, -0.5]), torch.tensor([1.0, 0.0, 2.0])
    p = torch.softmax(logits, -1)
    mean = expected_estimate(fn, logits, rewards, G=4)
    exact = p * (rewards - (p * rewards).sum())
    return report(bool(torch.allclose(mean, exact, atol=1e-5)),
                  f"  Averaged exactly over all 81 groups of 4, your estimate is {fmt(mean)} = ∇J: unbiased, where "
                  f"the group mean gave 3/4 of it.")
