"""grpo_lib.course.exercises.ex02 (exercises 2.1 and 2.2): each checker accepts the library's answer (and an
independent one written here) and rejects the placeholder and plausible wrong answers, with a hint; none of them
ever raises."""

import math

import pytest
import torch

from grpo_lib.advantages import group_advantages
from grpo_lib.course.exercises.checking import CheckResult
from grpo_lib.course.exercises.ex02 import check_centered_advantages, check_zero_std_probability, zero_std_probability
from checker_helpers import passes as _passes, fails as _fails, placeholder as _placeholder


# --- 2.1 centred advantages -------------------------------------------------------------------------


def test_centered_accepts_library_and_independent_answer(capsys):
    _passes(check_centered_advantages(lambda r: group_advantages(r, scale="none")), capsys)
    _passes(check_centered_advantages(lambda r: r - r.mean(dim=-1, keepdim=True)), capsys)
    _passes(check_centered_advantages(lambda r: (r - r.mean(dim=1, keepdim=True)).tolist()), capsys)  # a list is fine


@pytest.mark.parametrize("wrong, hint", [
    (lambda r: torch.zeros_like(r), "subtract each row's mean"),                      # the placeholder
    (lambda r: r - r.mean(), "each group's own mean"),                                # batch mean
    (lambda r: group_advantages(r), "do not divide by the std"),                      # the GRPO scaling
    (lambda r: group_advantages(r, ddof=0), "do not divide by the std"),
    (lambda r: r - r.mean(dim=-1), "keepdim=True"),                                   # missing keepdim: (N,)
    (lambda r: (r - r.mean(dim=-1, keepdim=True))[0], "keepdim=True"),                # wrong shape (G,)
    (lambda r: r.mean(dim=-1, keepdim=True) - r, "every row of A sums to 0"),         # sign flipped
])
def test_centered_rejects_plausible_mistakes(wrong, hint, capsys):
    _fails(check_centered_advantages(wrong), capsys, hint)


def test_centered_never_raises_on_a_crashing_answer(capsys):
    def broken(r):
        raise ZeroDivisionError("oops")
    out = _fails(check_centered_advantages(broken), capsys, "same shape")
    assert "ZeroDivisionError: oops" in out


def test_centered_shows_expected_values_in_the_message(capsys):
    check_centered_advantages(lambda r: torch.zeros_like(r))
    assert "expected [[0.75, -0.25, -0.25, -0.25]], got [[0.0, 0.0, 0.0, 0.0]]" in capsys.readouterr().out


# --- 2.2 zero-std probability -----------------------------------------------------------------------


def test_zero_std_reference_matches_simulation():
    g = torch.Generator().manual_seed(1)
    r = torch.bernoulli(torch.full((20000, 4), 0.3), generator=g)                  # (N, G) 0/1 rewards
    flat = ((r.sum(-1) == 0) | (r.sum(-1) == 4)).float().mean().item()
    assert abs(flat - zero_std_probability(0.3, 4)) < 0.015                      # 0.7^4 + 0.3^4 = 0.2482
    assert zero_std_probability(0.5, 2) == 0.5 and zero_std_probability(0.0, 7) == 1.0


def test_zero_std_checker_both_ways(capsys):
    _passes(check_zero_std_probability(lambda p, G: p**G + (1 - p) ** G), capsys)
    _passes(check_zero_std_probability(lambda p, G: math.comb(G, 0) * (1 - p) ** G + math.comb(G, G) * p**G), capsys)
    _fails(check_zero_std_probability(lambda p, G: p**G), capsys, "only 'all right'")
    _fails(check_zero_std_probability(lambda p, G: (1 - p) ** G), capsys, "only 'all wrong'")
    _fails(check_zero_std_probability(lambda p, G: 0.0), capsys, "independent")
    _fails(check_zero_std_probability(lambda p, G: "half"), capsys, "single number")
    _fails(check_zero_std_probability(lambda p: p), capsys, "TypeError")


# --- every checker: the student placeholder is "not yet", garbage never raises ----------------------


@pytest.mark.parametrize("check, exercise", [(check_centered_advantages, "2.1"), (check_zero_std_probability, "2.2")])
def test_student_placeholder_is_not_yet_with_a_hint(check, exercise, capsys):
    result = check(_placeholder(exercise))
    out = capsys.readouterr().out
    assert not result and out.startswith(f"✗ Not yet: Exercise {exercise} is not filled in yet."), out
    assert "\n  Hint: " in out and len(out.split("Hint: ")[1].strip()) > 20


@pytest.mark.parametrize("check", [check_centered_advantages, check_zero_std_probability])
@pytest.mark.parametrize("garbage", [
    None, "a string, not a function", lambda *a: None, lambda *a: "text", lambda *a: torch.ones(2, 2, 2),
    lambda *a: [1, [2, 3]], lambda *a: float("nan"), lambda *a: torch.tensor([True, False]),
])
def test_checkers_never_raise_on_garbage(check, garbage, capsys):
    result = check(garbage)
    out = capsys.readouterr().out
    assert isinstance(result, CheckResult) and not result and out.startswith("✗ Not yet"), out
