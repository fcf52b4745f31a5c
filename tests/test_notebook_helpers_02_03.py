"""grpo_lib.checks_02_03: each exercise checker accepts the library's answer (and an independent one written
here) and rejects the placeholder and plausible wrong answers, with a hint; none of them ever raises."""
import math
import re

import pytest
import torch

from grpo_lib.advantages import group_advantages
from grpo_lib.checks_02_03 import (
    STRICT_FORMAT_CASES,
    CheckResult,
    check_centered_advantages,
    check_strict_format,
    check_wilson_interval,
    check_zero_std_probability,
    zero_std_probability,
)
from grpo_lib.evaluation import wilson_interval
from grpo_lib.rewards import strict_format_reward
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


# --- 3.1 strict format ------------------------------------------------------------------------------

_TAG = r"(?:(?!</?reasoning>|</?answer>).)"


def independent_strict_format(text):
    """A regex version written for this test: one block of each, in order, contents non-empty and not '...'."""
    m = re.fullmatch(rf"\s*<reasoning>({_TAG}*)</reasoning>\s*<answer>({_TAG}*)</answer>\s*", text, re.DOTALL)
    return bool(m) and all(part.strip() not in ("", "...") for part in m.groups())


def test_independent_rule_agrees_with_library_on_the_cases():
    for name, text in STRICT_FORMAT_CASES:
        assert independent_strict_format(text) == (strict_format_reward([[{"content": text}]])[0] > 0), name


def test_strict_format_checker_both_ways(capsys):
    _passes(check_strict_format(lambda t: strict_format_reward([[{"content": t}]])[0]), capsys)
    _passes(check_strict_format(independent_strict_format), capsys)
    _fails(check_strict_format(lambda t: "<answer>" in t), capsys, "exactly the hack")          # the placeholder
    no_dotall = re.compile(r"\s*<reasoning>(.+?)</reasoning>\s*<answer>(.+?)</answer>\s*")
    _fails(check_strict_format(lambda t: bool(no_dotall.fullmatch(t))), capsys, "re.DOTALL")
    unanchored = re.compile(r"<reasoning>(.+?)</reasoning>\s*<answer>(.+?)</answer>", re.DOTALL)
    _fails(check_strict_format(lambda t: bool(unanchored.search(t))), capsys, "anchor the end")
    _fails(check_strict_format(lambda t: None.strip()), capsys, "AttributeError")


# --- 3.2 Wilson interval ----------------------------------------------------------------------------


def independent_wilson(k, n, z=1.96):
    """Wilson's interval as the roots of (p̂ - p)² = z² p (1 - p) / n, solved as a quadratic in p."""
    p_hat = k / n
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


def test_independent_wilson_matches_library():
    for k, n in [(7, 30), (27, 30), (0, 10), (10, 10), (3, 7)]:
        assert all(abs(x - y) < 1e-4 for x, y in zip(independent_wilson(k, n), wilson_interval(k, n)))


def test_wilson_checker_both_ways(capsys):
    _passes(check_wilson_interval(wilson_interval), capsys)
    _passes(check_wilson_interval(independent_wilson), capsys)

    def wald(k, n):
        p = k / n
        h = 1.96 * math.sqrt(p * (1 - p) / n)
        return p - h, p + h

    _fails(check_wilson_interval(wald), capsys, "Wald")
    _fails(check_wilson_interval(lambda k, n: independent_wilson(k, n)[::-1]), capsys, "in that order")
    _fails(check_wilson_interval(lambda k, n: (0.0, 1.0)), capsys, "centre = ")                 # the placeholder
    _fails(check_wilson_interval(lambda k, n: k / n), capsys, "pair (low, high) of floats")


# --- every checker: the student placeholder is "not yet", garbage never raises ----------------------


@pytest.mark.parametrize("check, exercise", [
    (check_centered_advantages, "2.1"), (check_zero_std_probability, "2.2"),
    (check_strict_format, "3.1"), (check_wilson_interval, "3.2"),
])
def test_student_placeholder_is_not_yet_with_a_hint(check, exercise, capsys):
    result = check(_placeholder(exercise))
    out = capsys.readouterr().out
    assert not result and out.startswith(f"✗ Not yet: Exercise {exercise} is not filled in yet."), out
    assert "\n  Hint: " in out and len(out.split("Hint: ")[1].strip()) > 20


@pytest.mark.parametrize("check", [check_centered_advantages, check_zero_std_probability, check_strict_format,
                                   check_wilson_interval])
@pytest.mark.parametrize("garbage", [
    None, "a string, not a function", lambda *a: None, lambda *a: "text", lambda *a: torch.ones(2, 2, 2),
    lambda *a: [1, [2, 3]], lambda *a: float("nan"), lambda *a: torch.tensor([True, False]),
])
def test_checkers_never_raise_on_garbage(check, garbage, capsys):
    result = check(garbage)
    out = capsys.readouterr().out
    assert isinstance(result, CheckResult) and not result and out.startswith("✗ Not yet"), out
