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
from grpo_lib.course.exercises.checking import ERROR_HINT, read_number as _one_number
from grpo_lib.loss import grpo_loss


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

    Used by: tests/test_course_exercises_ex02.py. Exercise 2.1 of the notebook is now `check_flat_fraction` (issue 12);
    this checker stays for student copies made before.
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

    Used by: tests/test_course_exercises_ex02.py. Exercise 2.2 of the notebook is now `check_population_settings` (issue 12);
    this checker stays for student copies made before.
    """
    cases = [Case(f"p = {p}, G = {G}", (p, G), zero_std_probability(p, G)) for p, G in ZERO_STD_CASES]
    return run_cases(
        fn, cases, exercise="2.2",
        blank_hint="a group has std 0 when all G answers are right or all are wrong; the answers are independent.",
        error_hint="return a float for a success rate p and a group size G.",
        read=_read_float, matches=lambda got, expected: math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9),
        hint=_zero_std_hint, show=lambda x: f"{x:.6f}",
        success="✓ Correct: P(std = 0) = p^G + (1-p)^G.")

# --- issue 12: exercises that need the idea, with progressive hints (key_step) ---------------------------

FLAT_NUDGE = ("a group is flat when all G answers land on the same reward value: for each question add up the "
              "chance of that for every value, then combine the questions.")
FLAT_KEY = "(probs ** G).sum(dim=-1).mean(): per question Σ_k p_k^G, then the mean over the questions."
FLAT_CASES = (("one question, right half the time, G = 2: probs = [[0.5, 0.5]]", [[0.5, 0.5]], 2),
              ("one question with three reward values (0, 0.8, 2.8), G = 4: probs = [[0.5, 0.3, 0.2]]",
               [[0.5, 0.3, 0.2]], 4),
              ("two questions, one easy and one hard, G = 8: probs = [[0.1, 0.9], [0.9, 0.1]]",
               [[0.1, 0.9], [0.9, 0.1]], 8),
              ("a solved question and a 50/50 one, G = 4: probs = [[0.0, 1.0], [0.5, 0.5]]", [[0.0, 1.0], [0.5, 0.5]], 4))


def flat_fraction(probs: torch.Tensor, G: int) -> float:
    """Expected share of flat groups: probs (Q, K), row q = question q's distribution over K reward values."""
    return float((probs.double() ** G).sum(-1).mean())


def _flat_hint(case: Case, value: float) -> str:
    probs, G = case.args
    if math.isclose(value, flat_fraction(probs.mean(0, keepdim=True), G), abs_tol=1e-4):
        return ("you averaged the questions first. Is a batch of one easy and one hard question as likely to give "
                "flat groups as two medium ones?")
    if probs.shape[1] > 2 and math.isclose(value, float((probs[:, 0] ** G + probs[:, -1] ** G).mean()), abs_tol=1e-4):
        return "a group can also be flat on a middle reward value (every answer tagged but wrong, say)."
    if math.isclose(value, float((probs ** G).sum()), abs_tol=1e-4):
        return "that is a sum over the questions; a share is per question, so average."
    return "for one question, list the ways a group can be flat, one per reward value; then combine the questions."


@never_raises("2.1")
def check_flat_fraction(fn: Callable[[torch.Tensor, int], Any]) -> CheckResult:
    """Exercise 2.1: the share of flat groups for questions of unequal difficulty, any number of reward values."""
    cases = [Case(name, (torch.tensor(rows, dtype=torch.float64), G),
                  flat_fraction(torch.tensor(rows, dtype=torch.float64), G)) for name, rows, G in FLAT_CASES]
    return run_cases(fn, cases, exercise="2.1", blank_hint=FLAT_NUDGE, key_step=FLAT_KEY, error_hint=ERROR_HINT,
                     read=_one_number, matches=lambda got, exp: math.isclose(got, exp, abs_tol=1e-4),
                     hint=_flat_hint, show=lambda v: f"{v:.4f}",
                     success="✓ Correct: every reward value can make a flat group, and unequal questions add up "
                             "to far more flat groups than the average question: 0.4305 for [[0.1, 0.9], [0.9, 0.1]] "
                             "at G = 8, where p = 0.5 alone gives 0.0078.")


STD_NUDGE = ("switching the std multiplies every advantage by one factor. Which terms of the loss does that factor "
             "reach, and which does it not?")
STD_KEY = "c = sqrt(G / (G - 1)): lr_new = c * lr and beta_new = beta / c."


def toy_run(ddof: int, lr: float, beta: float, steps: int = 6) -> torch.Tensor:
    """SGD on a 3-answer softmax policy with one fixed group of G = 4 (r = [1, 0, 0, 0]); the final logits (3,)."""
    theta = torch.zeros(3, requires_grad=True)
    o = torch.tensor([0, 1, 1, 2])
    logp_ref = torch.log_softmax(torch.zeros(3), -1)[o][:, None]
    A = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), ddof=ddof, std_floor=0.0).reshape(-1)
    opt = torch.optim.SGD([theta], lr=lr)
    for _ in range(steps):
        logp = torch.log_softmax(theta, -1)[o][:, None]
        loss, _ = grpo_loss(logp, logp.detach(), logp_ref, A, torch.ones(4, 1), beta=beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return theta.detach()


def _settings(got: Any, case: Case) -> Any:
    try:
        lr_new, beta_new = (float(v) for v in got)
    except Exception:  # noqa: BLE001
        return Rejected(repr(got)[:60], "return two numbers, (lr_new, beta_new).")
    if not (lr_new > 0 and beta_new >= 0 and math.isfinite(lr_new) and math.isfinite(beta_new)):
        return Rejected(f"({lr_new}, {beta_new})", "a learning rate > 0 and a β >= 0.")
    return toy_run(1, lr_new, beta_new), (lr_new, beta_new)


def _std_hint(case: Case, value: Any) -> str:
    (lr, beta, G), (lr_new, beta_new) = case.args, value[1]
    c = math.sqrt(G / (G - 1))
    if math.isclose(lr_new, c * lr, rel_tol=1e-4) and math.isclose(beta_new, beta, rel_tol=1e-4):
        return "the learning rate is right, but the runs still differ: does β's term see the std at all?"
    if math.isclose(lr_new, lr / c, rel_tol=1e-4):
        return "which std is larger, the sample one or the population one? So which advantages are larger?"
    return "compare one SGD step of both runs term by term: the advantage term and the KL term."


@never_raises("2.2")
def check_population_settings(fn: Callable[[float, float, int], Any]) -> CheckResult:
    """Exercise 2.2: fn(lr, beta, G) -> (lr_new, beta_new) so that a sample-std SGD run reproduces a population-std one."""
    cases = [Case(f"lr = {lr}, β = {beta}, G = {G}", (lr, beta, G), toy_run(0, lr, beta))
             for lr, beta, G in ((0.5, 0.04, 4), (0.3, 0.5, 4))]
    return run_cases(fn, cases, exercise="2.2", blank_hint=STD_NUDGE, key_step=STD_KEY, error_hint=ERROR_HINT,
                     read=_settings, matches=lambda got, exp: bool(torch.allclose(got[0], exp, atol=1e-5)),
                     hint=_std_hint, show=lambda v: f"final logits {fmt(v)}",
                     show_got=lambda v: f"final logits {fmt(v[0])}",
                     success="✓ Correct: with your settings the sample-std run follows the population-std run step "
                             "for step. The learning rate alone was not enough: β's term does not see the std.")
