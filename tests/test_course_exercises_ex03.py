"""grpo_lib.course.exercises.ex03's strict-format checker (exercise 3.1): it accepts the library's answer (and an
independent one written here) and rejects the placeholder and plausible wrong answers, with a hint; it never
raises. Also the library's Wilson interval (notebook 03, section 3.8) against an independent solution.
(Exercise 3.2's checker, `check_fisher`, is tested in tests/test_course_exercises_hints.py.)"""

import math
import re

import pytest
import torch

from grpo_lib.course.exercises.checking import CheckResult
from grpo_lib.course.exercises.ex03 import STRICT_FORMAT_CASES, check_strict_format
from grpo_lib.evaluation import wilson_interval
from grpo_lib.rewards import strict_format_reward
from checker_helpers import passes as _passes, fails as _fails, placeholder as _placeholder


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
    _fails(check_strict_format(lambda t: strict_format_reward([[{"content": t}]])[0]), capsys,
           "calls `strict_format_reward`")                                  # the library's answer handed in
    _passes(check_strict_format(independent_strict_format), capsys)
    _fails(check_strict_format(lambda t: "<answer>" in t), capsys, "exactly the hack")          # the placeholder
    no_dotall = re.compile(r"\s*<reasoning>(.+?)</reasoning>\s*<answer>(.+?)</answer>\s*")
    _fails(check_strict_format(lambda t: bool(no_dotall.fullmatch(t))), capsys, "re.DOTALL")
    unanchored = re.compile(r"<reasoning>(.+?)</reasoning>\s*<answer>(.+?)</answer>", re.DOTALL)
    _fails(check_strict_format(lambda t: bool(unanchored.search(t))), capsys, "anchor the end")
    _fails(check_strict_format(lambda t: None.strip()), capsys, "AttributeError")


# --- the Wilson interval of section 3.8 (the library's) --------------------------------------------


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


# --- the checker: the student placeholder is "not yet", garbage never raises ----------------------


def test_student_placeholder_is_not_yet_with_a_hint(capsys):
    exercise = "3.1"
    result = check_strict_format(_placeholder(exercise))
    out = capsys.readouterr().out
    assert not result and out.startswith(f"✗ Not yet: Exercise {exercise} is not filled in yet."), out
    assert "\n  Hint: " in out and len(out.split("Hint: ")[1].strip()) > 20


@pytest.mark.parametrize("garbage", [
    None, "a string, not a function", lambda *a: None, lambda *a: "text", lambda *a: torch.ones(2, 2, 2),
    lambda *a: [1, [2, 3]], lambda *a: float("nan"), lambda *a: torch.tensor([True, False]),
])
def test_checker_never_raises_on_garbage(garbage, capsys):
    result = check_strict_format(garbage)
    out = capsys.readouterr().out
    assert isinstance(result, CheckResult) and not result and out.startswith("✗ Not yet"), out
