"""Checker for the fill-in exercise of notebook 01: a leave-one-out baseline (exercise 1.1).

Exercise 1.1 asks for advantages whose baseline leaves the answer's own reward out, A_i = r_i - mean_{j≠i} r_j,
for one group r of shape (G,) (`loo_advantages` is the reference). `check_loo_advantages` compares on a few
groups, names the plausible mistakes (the lesson's group mean, GRPO's std-scaled advantage, dividing by G instead
of G - 1, the sign), and then averages the learner's estimate exactly over all 81 groups of 4 of section 1.6's
policy to show that it is unbiased.

Taught in: notebooks/01_worked_example_2plus3.ipynb
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch

from grpo_lib.advantages import group_advantages
from grpo_lib.course.exercises.checking import Case, CheckResult, fmt, never_raises, report, run_cases
from grpo_lib.course.exercises.checking import ERROR_HINT, read_tensor as _tensor_like


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
