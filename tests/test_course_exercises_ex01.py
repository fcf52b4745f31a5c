"""grpo_lib.course.exercises.ex01 (exercise 1.1): the checker accepts the library's answer and an independent one, rejects the
population std, a missing floor and the other plausible mistakes with a specific message, reports an unfilled
exercise as "not yet", and never raises."""
import math

import pytest
import torch

from grpo_lib.advantages import group_advantages
from grpo_lib.course.exercises.ex01 import GROUP_ADVANTAGE_CASES, check_group_advantages
from checker_helpers import passes as _passes, fails as _fails


def independent_advantages(r):
    """Written from the formula with plain Python floats: sample variance Σ(r - mean)² / (G - 1)."""
    values = [float(v) for v in r]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return torch.tensor([(v - mean) / (std + 1e-4) for v in values])


def test_reference_gives_the_hand_computed_2plus3_advantages():
    A = group_advantages(torch.tensor([[1.0, 0.0, 2.0]]))[0]
    assert torch.allclose(A, torch.tensor([0.0, -1 / 1.0001, 1 / 1.0001]))
    assert GROUP_ADVANTAGE_CASES[0][1] == (1.0, 0.0, 2.0)                   # the checker tries the 2+3 group first


def test_accepts_library_independent_and_no_floor_free_variants(capsys):
    _passes(check_group_advantages(lambda r: group_advantages(r[None])[0]), capsys)
    _passes(check_group_advantages(independent_advantages), capsys)
    _passes(check_group_advantages(lambda r: ((r - r.mean()) / (r.std() + 1e-4)).tolist()), capsys)   # a list is fine


def test_rejects_population_std_on_the_2plus3_group(capsys):
    out = _fails(check_group_advantages(lambda r: (r - r.mean()) / (r.std(correction=0) + 1e-4)), capsys,
                 "the 2+3 group", "population std", "G - 1")
    assert "expected [0.0, -0.9999, 0.9999], got [0.0, -1.2246, 1.2246]" in out


def test_rejects_population_std_without_floor_too(capsys):
    _fails(check_group_advantages(lambda r: (r - r.mean()) / r.std(correction=0)), capsys, "population std")


def test_rejects_missing_floor_on_the_all_equal_group(capsys):
    out = _fails(check_group_advantages(lambda r: (r - r.mean()) / r.std()), capsys, "all equal", "+ 1e-4")
    assert "got [nan, nan, nan]" in out


@pytest.mark.parametrize("wrong, hint", [
    (lambda r: r - r.mean(), "did not divide by the std"),                      # Dr. GRPO: passes the 2+3 group
    (lambda r: torch.zeros_like(r), "subtract the group mean"),
    (lambda r: (r.mean() - r) / (r.std() + 1e-4), "sign is flipped"),
    (lambda r: r / (r.std() + 1e-4), "sum to 0"),
    (lambda r: ((r - r.mean()) / (r.std() + 1e-4))[None], "shape (G,)"),      # (1, G) instead of (G,)
    (lambda r: "A", "not a tensor"),
    (lambda r: None, "not a tensor"),
    (lambda r: r.std(dim=5), "IndexError"),                                     # crashes inside the learner's code
])
def test_rejects_plausible_mistakes_with_a_specific_hint(wrong, hint, capsys):
    _fails(check_group_advantages(wrong), capsys, hint)


def test_student_placeholder_is_not_yet(capsys):
    def placeholder(r):
        # YOUR CODE HERE
        raise NotImplementedError("Exercise 1.1")
    out = _fails(check_group_advantages(placeholder), capsys, "Exercise 1.1 is not filled in yet", "Hint:")
    assert out.startswith("✗ Not yet: Exercise 1.1")


def test_never_raises_on_garbage(capsys):
    for garbage in (None, 42, "not a function", lambda: 0, lambda r, extra: r):
        result = check_group_advantages(garbage)
        assert not result
    capsys.readouterr()
