"""Checkers for the fill-in exercises of notebook 02: flat groups on unequal questions (2.1) and the sample- vs
population-std settings (2.2).

Each `check_*` function runs a learner's function on a few fixed cases, compares it with a reference written
here (`flat_fraction`) or with a reference run (`toy_run`), prints ✓ or ✗ with the first failing case and a hint, and returns a
`CheckResult` that is truthy when every case passed. A checker never raises: a student copy whose exercise
cells still hold the placeholder (`raise NotImplementedError("Exercise 2.1")`) runs green under nbmake and
reports "✗ Not yet: Exercise 2.1 is not filled in yet" with a hint. The shared loop is
`grpo_lib.course.exercises.checking.run_cases`.

The references are written here once, so the solution to an exercise is always something a learner can open and
read.

Taught in: notebooks/02_advantages.ipynb
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from grpo_lib.advantages import group_advantages
from grpo_lib.course.exercises.checking import Case, CheckResult, Rejected, fmt, never_raises, run_cases
from grpo_lib.course.exercises.checking import ERROR_HINT, read_number as _one_number
from grpo_lib.loss import grpo_loss


FLAT_NUDGE = ("start with one question and G = 2: list every way its two answers can leave the advantages all 0. "
              "Then ask whether a batch of one easy and one hard question is as likely to be flat as two medium ones.")
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
