"""grpo_lib.course.exercises.ex07: exercise 7.1 (k3 and ρ·k3 on tokens from π_old) and 7.2 (the entropy change of a
plain policy-gradient step on a softmax).

The references are checked by numbers computed by hand (in the comments) and by independent computations: for 7.1
the exact KL(π_θ ‖ π_ref) and a Monte Carlo average over tokens drawn from π_old; for 7.2 the entropy of the
softmax really moved by a small step (a finite difference) and autograd's gradient of J. Each checker accepts
answers written apart from its reference, rejects each plausible mistake with its own hint, reports the student
placeholder as "not yet", refuses its own reference handed in, and never raises.
"""
import math

import pytest
import torch

from checker_helpers import fails as _fails, passes as _passes, placeholder as _placeholder
from grpo_lib.course.exercises import checking
from grpo_lib.course.exercises.ex07 import (ENTROPY_CASES, ENTROPY_KEY, KL_CASES, KL_KEY, check_entropy_change_pg,
                                           check_offpolicy_kl, entropy_change_pg, offpolicy_kl)


@pytest.fixture(autouse=True)
def fresh_attempts():
    checking.reset_attempts()
    yield
    checking.reset_attempts()


# --- 7.1 -------------------------------------------------------------------------------------------------------


def test_offpolicy_kl_by_hand():
    # p_theta = [.5, .5], p_old = [.8, .2], p_ref = [.25, .75]: r = [0.5, 1.5],
    # k3 = [0.5 - 1 + ln 2, 1.5 - 1 - ln 1.5] = [0.193147, 0.094535], ρ = [0.625, 2.5]
    # E_old[k3] = 0.8·0.193147 + 0.2·0.094535 = 0.173425; E_old[ρk3] = 0.5·0.193147 + 0.5·0.094535 = 0.143841
    # KL(π_θ ‖ π_ref) = 0.5 ln 2 + 0.5 ln(2/3) = 0.143841
    got = offpolicy_kl(*KL_CASES[0][1])
    assert got.tolist() == pytest.approx([0.173425, 0.143841], abs=1e-6)
    assert float(got[1]) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-12)


@pytest.mark.parametrize("case", range(len(KL_CASES)))
def test_the_weighted_estimate_is_the_exact_kl_and_a_monte_carlo_average_agrees(case):
    p_theta, p_old, p_ref = (torch.tensor(p, dtype=torch.float64) for p in KL_CASES[case][1])
    kl = float((p_theta * torch.log(p_theta / p_ref)).sum())
    plain, weighted = offpolicy_kl(p_theta, p_old, p_ref).tolist()
    assert weighted == pytest.approx(kl, rel=1e-12)
    g = torch.Generator().manual_seed(case)
    a = torch.multinomial(p_old, 400_000, replacement=True, generator=g)     # tokens from the sampler
    r = p_ref[a] / p_theta[a]
    k3 = r - torch.log(r) - 1
    assert float(k3.mean()) == pytest.approx(plain, abs=3e-3)
    assert float((p_theta[a] / p_old[a] * k3).mean()) == pytest.approx(weighted, abs=3e-3)
    if case != 1:                                                            # off-policy: plain k3 is off
        assert abs(plain - kl) > 0.02                                        # far beyond the sampling error


def _pair_by_loop(p_theta, p_old, p_ref):
    """Written apart from the reference: one token at a time, in Python floats."""
    e_k3 = e_rho_k3 = 0.0
    for pt, po, pr in zip(p_theta.tolist(), p_old.tolist(), p_ref.tolist()):
        k3 = pr / pt - math.log(pr / pt) - 1
        e_k3 += po * k3
        e_rho_k3 += po * (pt / po) * k3
    return e_k3, e_rho_k3


def test_7_1_accepts_independent_answers(capsys):
    out = _passes(check_offpolicy_kl(_pair_by_loop), capsys)
    assert "ρ·k3" in out
    _passes(check_offpolicy_kl(lambda *p: torch.tensor(_pair_by_loop(*p))), capsys)          # a tensor
    _passes(check_offpolicy_kl(lambda *p: [torch.tensor(x) for x in _pair_by_loop(*p)]), capsys)   # two tensors


def _k3(pt, pr):
    return pr / pt - torch.log(pr / pt) - 1


@pytest.mark.parametrize("wrong, hint", [
    (lambda pt, po, pr: _pair_by_loop(pt, po, pr)[::-1], "swapped"),
    (lambda pt, po, pr: ((po * _k3(pt, pr)).sum(),) * 2, "needs the importance weight"),
    (lambda pt, po, pr: ((po * _k3(pt, pr)).sum(), (po * po / pt * _k3(pt, pr)).sum()), "upside down"),
    (lambda pt, po, pr: ((po * _k3(pr, pt)).sum(), (pt * _k3(pr, pt)).sum()), "not π_θ/π_ref"),
    (lambda pt, po, pr: ((pt * torch.log(pt / pr)).sum(),) * 2, "plain k3 on tokens from π_old"),
    (lambda pt, po, pr: (_k3(pt, pr).mean(), (pt / po * _k3(pt, pr)).mean()), "weighs each token by π_old"),
])
def test_7_1_rejects_plausible_mistakes(wrong, hint, capsys):
    out = _fails(check_offpolicy_kl(wrong), capsys, "expected", hint)
    assert KL_KEY not in out


def test_7_1_placeholder_garbage_and_reference(capsys):
    _fails(check_offpolicy_kl(_placeholder("7.1")), capsys, "Exercise 7.1 is not filled in yet", "Hint")
    for garbage in (lambda *p: None, lambda *p: "kl", lambda *p: 1 / 0, lambda *p: torch.zeros(3), lambda *p: 0.1):
        _fails(check_offpolicy_kl(garbage), capsys, "expected")
    _fails(check_offpolicy_kl(offpolicy_kl), capsys, "your function calls `offpolicy_kl`")
    _fails(check_offpolicy_kl(lambda *p: offpolicy_kl(*p)), capsys, "your function calls `offpolicy_kl`")


# --- 7.2 -------------------------------------------------------------------------------------------------------


def test_entropy_change_by_hand():
    # π = [.5, .25, .25], A = [1, 0, 0]: Ā = 0.5, Δz/η = π(A - Ā) = [0.25, -0.125, -0.125]
    # E[log π] = -(0.5 ln 2 + 0.5 ln 4) = -1.039721; E[Δz/η] = 0.0625; E[log π · Δz/η] = 0 (the terms cancel)
    # Cov = 0 + 1.039721 · 0.0625 = 0.064983; ΔH ≈ -0.1 · 0.064983 = -0.0064983
    assert entropy_change_pg(*ENTROPY_CASES[0][1]) == pytest.approx(-0.0064983, abs=1e-7)
    assert entropy_change_pg(*ENTROPY_CASES[1][1]) > 0                      # a rare good action: H rises


def _entropy(z):
    p = torch.softmax(z, -1)
    return float(-(p * torch.log(p)).sum())


@pytest.mark.parametrize("case", range(len(ENTROPY_CASES)))
def test_first_order_change_matches_the_real_step(case):
    """Autograd gives ∇J; the entropy after a step of size η/1000 changes by the prediction/1000 (first order)."""
    z0, A, eta = ENTROPY_CASES[case][1]
    z = torch.tensor(z0, dtype=torch.float64, requires_grad=True)
    A = torch.tensor(A, dtype=torch.float64)
    (torch.softmax(z, -1) * A).sum().backward()
    small = eta / 1000
    real = _entropy(z.detach() + small * z.grad) - _entropy(z.detach())
    predicted = entropy_change_pg(z0, A, small)
    assert real == pytest.approx(predicted, rel=2e-3)
    assert entropy_change_pg(z0, A, eta) == pytest.approx(1000 * predicted, rel=1e-9)    # linear in η


def _by_autograd(logits, A, eta):
    """Written apart from the reference: the plain step from autograd, dH along it from autograd too."""
    z = logits.detach().clone().requires_grad_(True)
    (torch.softmax(z, -1) * A).sum().backward()
    step = eta * z.grad
    z2 = logits.detach().clone().requires_grad_(True)
    p = torch.softmax(z2, -1)
    (-(p * torch.log(p)).sum()).backward()
    return float((z2.grad * step).sum())


def test_7_2_accepts_independent_answers(capsys):
    out = _passes(check_entropy_change_pg(_by_autograd), capsys)
    assert "Cov_π(log π, π·(A - Ā))" in out
    _passes(check_entropy_change_pg(lambda z, A, eta: torch.tensor(_by_autograd(z, A, eta))), capsys)


def _cov(w, x, y):
    return (w * x * y).sum() - (w * x).sum() * (w * y).sum()


@pytest.mark.parametrize("wrong, hint", [
    (lambda z, A, eta: -eta * _cov(z.softmax(-1), z.log_softmax(-1), A), "natural-gradient step"),
    (lambda z, A, eta: -_by_autograd(z, A, eta), "the sign"),
    (lambda z, A, eta: -eta * _cov(z.softmax(-1), z.log_softmax(-1), z.softmax(-1) * A), "baseline"),
    (lambda z, A, eta: -eta * _cov(torch.full_like(z, 1 / len(z)), z.log_softmax(-1),
                                   z.softmax(-1) * (A - (z.softmax(-1) * A).sum())), "weigh each action by π(a)"),
])
def test_7_2_rejects_plausible_mistakes(wrong, hint, capsys):
    out = _fails(check_entropy_change_pg(wrong), capsys, "expected", hint)
    assert ENTROPY_KEY not in out


def test_7_2_placeholder_garbage_and_reference(capsys):
    _fails(check_entropy_change_pg(_placeholder("7.2")), capsys, "Exercise 7.2 is not filled in yet", "Hint")
    for garbage in (lambda z, A, eta: None, lambda z, A, eta: [1.0, 2.0], lambda z, A: 0.0, lambda z, A, eta: 1 / 0):
        _fails(check_entropy_change_pg(garbage), capsys, "expected")
    _fails(check_entropy_change_pg(entropy_change_pg), capsys, "your function calls `entropy_change_pg`")


def test_key_steps_come_on_request_or_after_repeated_wrong_answers(capsys):
    wrong = lambda z, A, eta: 0.0                                              # noqa: E731
    for n in range(1, checking.SHOW_KEY_STEP_AFTER + 1):
        check_entropy_change_pg(wrong)
        assert (ENTROPY_KEY in capsys.readouterr().out) == (n >= checking.SHOW_KEY_STEP_AFTER)
    assert KL_KEY not in checking.hint("7.1") and KL_KEY in checking.hint("7.1")
