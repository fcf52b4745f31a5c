"""Checkers for the fill-in exercises of notebook 07: the KL estimate on off-policy samples (7.1) and the entropy
change of a plain policy-gradient step on a softmax (7.2).

Exercise 7.1 asks for `offpolicy_kl(p_theta, p_old, p_ref)`: the exact expectations, over tokens a drawn from the
sampler π_old, of k3(a) = r - log r - 1 with r = π_ref(a)/π_θ(a), and of ρ(a)·k3(a) with ρ = π_θ(a)/π_old(a),
returned as a pair. The second equals KL(π_θ ‖ π_ref) (the importance weight turns π_old's expectation into
π_θ's: DeepSeek-V3.2's ρ·k3), the first does not. The checker rejects the pair swapped, ρ left out, ρ inverted
(π_old/π_θ), r inverted (π_θ/π_ref) and a mean over tokens without the sampler's weights.

Exercise 7.2 asks for `entropy_change_pg(logits, A, eta)`: to first order in η, the change of the entropy H(π) of
a softmax policy π = softmax(z) over V actions after one plain gradient-ascent step on J(z) = Σ_a π(a) A(a),
z ← z + η ∇J. The notebook shows the natural-gradient step (z ← z + η A, ΔH ≈ -η Cov_π(log π, A)); here the
step is ∇J_a = π(a)(A(a) - Σ_b π(b) A(b)), and ΔH ≈ -Cov_π(log π, Δz) whatever the step Δz, so
ΔH ≈ -η Cov_π(log π, π·(A - Ā)): the "extra π(a)" of plain softmax policy gradient (Cui et al. 2025). The
checker rejects the natural-gradient answer, the sign flipped, a step without the baseline Ā, and a covariance
that weighs the actions equally instead of by π.

Like every checker they never raise: a student copy whose exercise cell still holds
`raise NotImplementedError("Exercise 7.1")` runs green under nbmake and prints "✗ Not yet: Exercise 7.1 is not
filled in yet" with a nudge; `hint("7.1")` shows the key step. tests/test_course_exercises_ex07.py checks the
references by hand-computed values and by an independent computation (a finite-difference entropy change).

Taught in: notebooks/07_grpo_after_r1.ipynb
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from grpo_lib.course.exercises.checking import ERROR_HINT, Case, CheckResult, Rejected, as_tensor, never_raises, \
    register_hints, run_cases
from grpo_lib.course.exercises.checking import read_number as _one_number

__all__ = ["CheckResult", "KL_KEY", "KL_NUDGE", "KL_CASES", "offpolicy_kl", "check_offpolicy_kl",
           "ENTROPY_KEY", "ENTROPY_NUDGE", "ENTROPY_CASES", "entropy_change_pg", "check_entropy_change_pg"]


# --- 7.1 the KL estimate on samples from π_old ---------------------------------------------------------------

KL_NUDGE = ("the tokens come from π_old, so an expectation is a sum over the tokens weighted by π_old(a). Which "
            "weight turns a π_old-weighted sum into a π_θ-weighted one?")
KL_KEY = ("r = p_ref / p_theta; k3 = r - log(r) - 1; rho = p_theta / p_old; return ((p_old * k3).sum(), "
          "(p_old * rho * k3).sum()): the second is Σ_a π_θ(a) k3(a) = KL(π_θ ‖ π_ref).")
register_hints("7.1", KL_NUDGE, KL_KEY)          # hint("7.1") works before the checker has run


def offpolicy_kl(p_theta: torch.Tensor, p_old: torch.Tensor, p_ref: torch.Tensor) -> torch.Tensor:
    """(E_{a~π_old}[k3(a)], E_{a~π_old}[ρ(a)·k3(a)]), k3 = r - log r - 1, r = π_ref/π_θ, ρ = π_θ/π_old.

    Args:
        p_theta, p_old, p_ref: probabilities of V tokens under π_θ, π_old (the sampler) and π_ref, (V,) each.

    Returns:
        a (2,) float64 tensor; its second entry is KL(π_θ ‖ π_ref).

    Used by: `check_offpolicy_kl` (exercise 7.1)
    """
    p_theta, p_old, p_ref = (torch.as_tensor(p, dtype=torch.float64) for p in (p_theta, p_old, p_ref))
    r = p_ref / p_theta                                             # (V,)
    k3 = r - torch.log(r) - 1                                       # (V,)
    rho = p_theta / p_old                                           # (V,)
    return torch.stack([(p_old * k3).sum(), (p_old * rho * k3).sum()])


KL_CASES = (
    ("two tokens: p_theta = [0.5, 0.5], p_old = [0.8, 0.2], p_ref = [0.25, 0.75]",
     ([0.5, 0.5], [0.8, 0.2], [0.25, 0.75])),
    ("π_old = π_θ (on-policy): p_theta = p_old = [0.7, 0.2, 0.1], p_ref = [0.2, 0.3, 0.5]",
     ([0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5])),
    ("four tokens: p_theta = [0.1, 0.2, 0.3, 0.4], p_old = [0.4, 0.3, 0.2, 0.1], p_ref = [0.25, 0.25, 0.25, 0.25]",
     ([0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25])),
)
"""(name, (p_theta, p_old, p_ref)): off-policy first (the on-policy case cannot tell k3 from ρ·k3)."""


def _read_pair(got: Any, case: Case) -> Any:
    if isinstance(got, (tuple, list)) and len(got) == 2:
        parts = [as_tensor(x) for x in got]
        if all(p is not None and p.numel() == 1 for p in parts):
            return torch.stack([p.reshape(()).double() for p in parts])
    value = as_tensor(got)
    if value is None or value.numel() != 2:
        return Rejected(repr(got)[:60], "return two numbers: (E_old[k3], E_old[ρ·k3]).", expected="a pair")
    return value.reshape(2).double()


def _pair_hint(case: Case, got: torch.Tensor) -> str:
    p_theta, p_old, p_ref = (torch.as_tensor(p, dtype=torch.float64) for p in case.args)
    close = lambda a, b: bool(torch.allclose(a, b, rtol=1e-4, atol=1e-7))          # noqa: E731
    exp = case.expected
    if close(got, exp.flip(0)):
        return "the two are swapped: first the plain k3, then ρ·k3."
    r = p_ref / p_theta
    k3 = r - torch.log(r) - 1
    kl = (p_theta * torch.log(p_theta / p_ref)).sum()
    if close(got, torch.stack([kl, kl])):
        return ("the first number is plain k3 on tokens from π_old, without any weight: it is not the KL when "
                "π_old differs from π_θ.")
    if close(got, torch.stack([(p_old * k3).sum()] * 2)):
        return "the second number needs the importance weight ρ = π_θ/π_old on every token."
    if close(got[1], (p_old * (p_old / p_theta) * k3).sum()):
        return "ρ is upside down: it is π_θ/π_old, the policy being trained over the one that sampled."
    k3_inv = 1 / r + torch.log(r) - 1                               # r = π_θ/π_ref
    if close(got, torch.stack([(p_old * k3_inv).sum(), (p_theta * k3_inv).sum()])):
        return "k3's r is π_ref/π_θ (the reference over the policy), not π_θ/π_ref."
    if close(got[0], k3.mean()) or close(got[1], ((p_theta / p_old) * k3).mean()):
        return "an expectation over tokens drawn from π_old weighs each token by π_old(a), not 1/V."
    return "write both as sums over the V tokens, each term weighted by the probability that π_old samples it."


@never_raises("7.1")
def check_offpolicy_kl(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any]) -> CheckResult:
    """Exercise 7.1: fn(p_theta, p_old, p_ref) == (E_old[k3], E_old[ρ·k3]), the second being KL(π_θ ‖ π_ref).

    Taught in: notebooks/07_grpo_after_r1.ipynb
    """
    cases = [Case(name, tuple(torch.tensor(p, dtype=torch.float64) for p in ps), offpolicy_kl(*ps))
             for name, ps in KL_CASES]
    return run_cases(fn, cases, exercise="7.1", blank_hint=KL_NUDGE, key_step=KL_KEY, error_hint=ERROR_HINT,
                     read=_read_pair, matches=lambda got, exp: bool(torch.allclose(got, exp, rtol=1e-5, atol=1e-8)),
                     hint=_pair_hint, show=lambda t: str([round(float(v), 6) for v in t]),
                     references=(offpolicy_kl,),
                     success="✓ Correct: on tokens from π_old, plain k3 estimates nothing in particular, while ρ·k3 "
                             "averages to KL(π_θ ‖ π_ref): the importance weight turns π_old's average into π_θ's. "
                             "That is DeepSeek-V3.2's unbiased KL (TRL: use_bias_correction_kl=True).")


# --- 7.2 the entropy change of a plain policy-gradient step ----------------------------------------------------

ENTROPY_NUDGE = ("two steps: first the gradient of J(z) = Σ_a π(a) A(a) with respect to each logit z_b (how does π "
                 "change when one logit moves?), then how H changes when the logits move by Δz.")
ENTROPY_KEY = ("pi = softmax(z); dz = eta * pi * (A - (pi * A).sum()); ΔH ≈ -Cov_π(log π, dz) = "
               "-((pi * log_pi * dz).sum() - (pi * log_pi).sum() * (pi * dz).sum()).")
register_hints("7.2", ENTROPY_NUDGE, ENTROPY_KEY)


def entropy_change_pg(logits: torch.Tensor, A: torch.Tensor, eta: float) -> float:
    """First-order ΔH of softmax(z) after z ← z + η ∇_z Σ_a π(a) A(a): -η Cov_π(log π, π·(A - Ā)), Ā = Σ π A.

    Used by: `check_entropy_change_pg` (exercise 7.2)
    """
    z, A = torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(A, dtype=torch.float64)
    pi = torch.softmax(z, -1)                                       # (V,)
    log_pi = torch.log_softmax(z, -1)                               # (V,)
    dz = eta * pi * (A - (pi * A).sum())                            # (V,) the plain gradient step
    cov = (pi * log_pi * dz).sum() - (pi * log_pi).sum() * (pi * dz).sum()
    return float(-cov)


ENTROPY_CASES = (
    ("π = [0.5, 0.25, 0.25] (logits = log π), A = [1, 0, 0], η = 0.1: the likeliest action is the good one",
     ([math.log(0.5), math.log(0.25), math.log(0.25)], [1.0, 0.0, 0.0], 0.1)),
    ("the same π, A = [0, 0, 1], η = 0.1: a rare action is the good one",
     ([math.log(0.5), math.log(0.25), math.log(0.25)], [0.0, 0.0, 1.0], 0.1)),
    ("logits = [2, 0, -1, 0.5], A = [0.3, -1, 2, 0], η = 0.05",
     ([2.0, 0.0, -1.0, 0.5], [0.3, -1.0, 2.0, 0.0], 0.05)),
)
"""(name, (logits, A, eta)): a confident good action lowers the entropy, a rare good one raises it."""


def _entropy_hint(case: Case, value: float) -> str:
    z, A, eta = (torch.as_tensor(case.args[0], dtype=torch.float64), torch.as_tensor(case.args[1], dtype=torch.float64),
                 case.args[2])
    pi, log_pi = torch.softmax(z, -1), torch.log_softmax(z, -1)
    cov = lambda w, x, y: float((w * x * y).sum() - (w * x).sum() * (w * y).sum())  # noqa: E731
    close = lambda x: math.isclose(value, x, rel_tol=1e-4, abs_tol=1e-9)            # noqa: E731
    expected = case.expected
    if close(-cov(pi, log_pi, eta * A)):
        return ("that is the natural-gradient step Δz = η·A of the lesson. Plain gradient ascent on Σ π(a) A(a) "
                "moves each logit by something else: differentiate through the softmax.")
    if close(-expected):
        return "the sign: an update that makes the likeliest action likelier makes π sharper, so H falls."
    if close(-cov(pi, log_pi, eta * pi * A)):
        return ("differentiate Σ_a π(a) A(a) through the softmax: ∂π(a)/∂z_b = π(a)(1[a = b] - π(b)), so every "
                "logit's gradient has a baseline in it.")
    uniform = torch.full_like(pi, 1 / len(pi))
    if close(-cov(uniform, log_pi, eta * pi * (A - (pi * A).sum()))):
        return "the covariance is over actions drawn from π: weigh each action by π(a), not equally."
    return "H = -Σ π log π; its change is Σ_b (∂H/∂z_b) Δz_b, and ∂H/∂z_b = -π(b)(log π(b) + H)."


@never_raises("7.2")
def check_entropy_change_pg(fn: Callable[[torch.Tensor, torch.Tensor, float], Any]) -> CheckResult:
    """Exercise 7.2: fn(logits, A, eta) == -η Cov_π(log π, π·(A - Ā)), the first-order entropy change.

    Taught in: notebooks/07_grpo_after_r1.ipynb
    """
    cases = [Case(name, (torch.tensor(z, dtype=torch.float64), torch.tensor(A, dtype=torch.float64), eta),
                  entropy_change_pg(z, A, eta)) for name, (z, A, eta) in ENTROPY_CASES]
    return run_cases(fn, cases, exercise="7.2", blank_hint=ENTROPY_NUDGE, key_step=ENTROPY_KEY,
                     error_hint=ERROR_HINT, read=_one_number,
                     matches=lambda got, exp: math.isclose(got, exp, rel_tol=1e-5, abs_tol=1e-10),
                     hint=_entropy_hint, show=lambda v: f"{v:+.6f}", references=(entropy_change_pg,),
                     success="✓ Correct: plain policy gradient moves logit a by η·π(a)(A(a) - Ā), so the entropy "
                             "change is -η Cov_π(log π, π·(A - Ā)): a likely action with a high advantage sharpens "
                             "π (H falls), a rare one with a high advantage flattens it (H rises).")
