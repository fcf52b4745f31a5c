"""grpo_lib.course.exercises.ex05 (exercise 5.1, the completion mask): the reference is the mask the engine builds,
checked by hand and on a real rollout of the tiny model; the checker accepts an answer written independently,
rejects each plausible mistake with its own message, reports the student placeholder as "not yet", and never
raises; exercise 5.2 (maj@k with one wrong answer): by hand, by enumerating subsets and against
grpo_lib.course.evaluation.maj_at_k."""
import itertools
import math

import pytest
import torch

from checker_helpers import fails as _fails, passes as _passes, placeholder as _placeholder
from grpo_lib.course.evaluation import maj_at_k
from grpo_lib.course.exercises import checking
from grpo_lib.course.exercises.ex05 import (MASK_CASES, MASK_KEY, check_completion_mask, check_maj_two_answers,
                                           maj_two_answers, reference_mask)


@pytest.fixture(autouse=True)
def fresh_attempts():
    checking.reset_attempts()                                   # each test starts at wrong answer 0
    yield
    checking.reset_attempts()


def loop_mask(ids, eos_ids):
    """Written apart from the reference: walk each row, keep tokens until a stop token has been kept."""
    out = torch.zeros_like(ids)
    for i, row in enumerate(ids.tolist()):
        for t, token in enumerate(row):
            out[i, t] = 1
            if token in eos_ids:
                break
    return out


def test_reference_by_hand():
    """The cases' expected masks, written out."""
    expected = [
        [[1, 1, 1, 1, 0, 0]],
        [[1, 1, 0, 0, 0]],
        [[1, 1, 0, 0], [1, 1, 1, 0]],
        [[1, 1, 1, 1], [1, 0, 0, 0]],
    ]
    for (name, ids, eos_ids), want in zip(MASK_CASES, expected):
        got = reference_mask(ids, eos_ids)
        assert got.dtype == torch.int32 and got.tolist() == want, name
    ids, eos_ids = MASK_CASES[4][1:]
    lengths = reference_mask(ids, eos_ids).sum(-1).tolist()
    assert lengths == [4, 1, 12, 6, 8, 3, 10, 12]              # first stop at 3, 0, 11, 5, 7, 2, 9; row 7 never


def test_reference_is_the_mask_of_a_real_rollout():
    from grpo_lib.models import load_tiny_model
    from grpo_lib.rollout import generate_completions

    model, tok = load_tiny_model()
    rollout = generate_completions(model, tok, ["What is 12 + 34?\n", "What is 5 + 9?\n"], 4, max_new_tokens=30, seed=0)
    assert torch.equal(reference_mask(rollout.completion_ids, [tok.eos_token_id]), rollout.completion_mask)
    assert torch.equal(loop_mask(rollout.completion_ids, [tok.eos_token_id]), rollout.completion_mask.long())


def test_accepts_reference_and_independent_answers(capsys):
    out = _passes(check_completion_mask(loop_mask), capsys)
    assert "stop token is trained" in out
    _passes(check_completion_mask(lambda ids, eos: loop_mask(ids, eos).bool()), capsys)        # True/False is fine
    _passes(check_completion_mask(lambda ids, eos: loop_mask(ids, eos).float()), capsys)
    _passes(check_completion_mask(lambda ids, eos: loop_mask(ids, eos).tolist()), capsys)      # a nested list too


def _without_stop(ids, eos):
    return loop_mask(ids, eos) * ~torch.isin(ids, torch.tensor(eos))


def _to_last_stop(ids, eos):
    stop = torch.isin(ids, torch.tensor(eos))
    T = ids.shape[1]
    last = torch.where(stop.any(-1), T - 1 - stop.flip(-1).int().argmax(-1), T - 1)
    return torch.arange(T)[None, :] <= last[:, None]


def _argmax_without_any(ids, eos):                              # a row with no stop gets argmax 0: one token
    stop = torch.isin(ids, torch.tensor(eos))
    return (torch.arange(ids.shape[1])[None, :] <= stop.int().argmax(-1)[:, None]).int()


@pytest.mark.parametrize("wrong, case, hint", [
    (_without_stop, "then 2 pads", "you left out the stop token itself"),
    (lambda ids, eos: torch.ones_like(ids), "then 2 pads", "you kept tokens after the stop token"),
    (_to_last_stop, "stopped twice", "you went on to the last stop token"),
    (lambda ids, eos: loop_mask(ids, eos[:1]), "two stop ids", "you used only the first of eos_ids"),
    (_argmax_without_any, "truncated at T = 4", "a row that never stops was cut at T"),
    (lambda ids, eos: (ids != 0).int(), "stopped twice", "you went on to the last stop token"),   # "mask the pads"
])
def test_rejects_plausible_mistakes_with_their_hint(wrong, case, hint, capsys):
    out = _fails(check_completion_mask(wrong), capsys, case, hint, "expected")
    assert MASK_KEY not in out                                  # the key step only from the 3rd wrong answer on


def test_placeholder_is_not_yet(capsys):
    out = _fails(check_completion_mask(_placeholder("5.1")), capsys, "Exercise 5.1 is not filled in yet", "Hint")
    assert out.startswith("✗ Not yet: Exercise 5.1") and MASK_KEY not in out


@pytest.mark.parametrize("garbage", [lambda ids, eos: None, lambda ids, eos: "mask", lambda ids, eos: 1 / 0,
                                     lambda ids, eos: torch.zeros(3), lambda ids, eos: torch.full(ids.shape, 2),
                                     lambda ids, eos: [[None]]],
                         ids=["None", "str", "raises", "shape", "not 0/1", "ragged"])
def test_never_raises(garbage, capsys):
    _fails(check_completion_mask(garbage), capsys, "expected")


# --- 5.2 maj@k with one wrong answer ------------------------------------------------------------------------------


def maj_by_subsets(n, c, k):
    """Every k-subset of n samples (the first c right, the rest one wrong answer): 1 if right wins, 1/2 on a tie."""
    subsets = list(itertools.combinations(range(n), k))
    score = 0.0
    for s in subsets:
        t = sum(i < c for i in s)
        score += 1.0 if 2 * t > k else 0.5 if 2 * t == k else 0.0
    return score / len(subsets)


def test_maj_two_answers_reference_by_hand_by_enumeration_and_against_the_library():
    assert maj_two_answers(5, 3, 3) == pytest.approx(0.7)              # (C(3,2)·C(2,1) + C(3,3)) / C(5,3) = 7/10
    assert maj_two_answers(4, 2, 2) == pytest.approx(0.5)              # (1 + 4 · 1/2) / 6
    assert maj_two_answers(16, 8, 16) == 0.5 and maj_two_answers(16, 6, 16) == 0.0
    assert maj_two_answers(16, 12, 1) == pytest.approx(0.75)
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert maj_two_answers(n, c, k) == pytest.approx(maj_by_subsets(n, c, k), abs=1e-12)
    for n, c, k in ((16, 6, 4), (16, 11, 7), (16, 3, 16)):
        assert maj_two_answers(n, c, k) == pytest.approx(maj_at_k(["g"] * c + ["w"] * (n - c),
                                                                  [True] * c + [False] * (n - c), k), abs=1e-12)


def test_maj_accepts_reference_and_independent_answers(capsys):
    out = _passes(check_maj_two_answers(maj_by_subsets), capsys)
    assert "hypergeometric" in out
    _passes(check_maj_two_answers(lambda n, c, k: torch.tensor(maj_by_subsets(n, c, k))), capsys)


def _binomial(n, c, k, tie):
    p = c / n
    return sum(math.comb(k, t) * p ** t * (1 - p) ** (k - t) * (1.0 if 2 * t > k else tie if 2 * t == k else 0.0)
               for t in range(k + 1))


def _no_ties(n, c, k):
    return sum(math.comb(c, t) * math.comb(n - c, k - t) for t in range(k + 1) if 2 * t > k) / math.comb(n, k)


@pytest.mark.parametrize("wrong, hint", [
    (lambda n, c, k: _binomial(n, c, k, 0.5), "with replacement"),
    (lambda n, c, k: _binomial(n, c, k, 0.0), "with replacement"),
    (_no_ties, "look at the tie"),
    (lambda n, c, k: _no_ties(n, c, k) + sum(math.comb(c, k // 2) * math.comb(n - c, k // 2)
                                               for _ in [0] if k % 2 == 0) / math.comb(n, k), "look at the tie"),
    (lambda n, c, k: 1 - math.comb(n - c, k) / math.comb(n, k), "that is pass@k"),
    (lambda n, c, k: c / n, "it is maj@1"),
    (lambda n, c, k: maj_by_subsets(n, c, k) + 0.01, "how likely is each t"),
])
def test_maj_rejects_plausible_mistakes(wrong, hint, capsys):
    _fails(check_maj_two_answers(wrong), capsys, hint, "expected")


def test_maj_unfilled_and_garbage_never_raise(capsys):
    _fails(check_maj_two_answers(_placeholder("5.2")), capsys, "Exercise 5.2 is not filled in yet", "count subsets")
    _fails(check_maj_two_answers(lambda n, c, k: None), capsys, "return one number")
    _fails(check_maj_two_answers(lambda n, c, k: [0.5, 0.5]), capsys, "return one number")
    _fails(check_maj_two_answers(lambda n, c: 0.5), capsys, "TypeError")
    _fails(check_maj_two_answers("maj"), capsys)


def test_exercise_5_2_table_in_teaching_md():
    """docs/teaching.md, exercise 5.2: the maj@k and pass@k rows for n = 16, c = 6 are what the functions give."""
    from pathlib import Path

    from grpo_lib.course.evaluation import pass_at_k
    text = (Path(__file__).resolve().parents[1] / "docs" / "teaching.md").read_text(encoding="utf-8")
    ks = (1, 2, 3, 4, 6, 8, 12)
    maj = " | ".join(f"{maj_two_answers(16, 6, k):.3f}" for k in ks) + " | " + f"{maj_two_answers(16, 6, 13):.0f}"
    assert all(maj_two_answers(16, 6, k) == 0.0 for k in range(13, 17))
    passes = " | ".join(f"{pass_at_k(16, 6, k):.3f}" for k in ks) + " | 1.000"
    assert all(pass_at_k(16, 6, k) == 1.0 for k in range(13, 17))
    assert f"| maj@k | {maj} |" in text and f"| pass@k | {passes} |" in text
