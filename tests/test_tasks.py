"""grpo_lib.tasks: the split, the reasoning by hand and against an independent column adder."""

import re

import pytest

from grpo_lib.tasks import (
    PLAIN_PROMPT,
    addition_problems,
    answer_for,
    completion_for,
    has_carry,
    reasoning_for,
)

COMPLETION_RE = re.compile(r"^<reasoning>([0-9+=,]+)</reasoning>\n<answer>(\d+)</answer>$")


def independent_reasoning(a: int, b: int) -> tuple[str, str]:
    """Schoolbook addition written differently: arithmetic on a % 10 and a // 10, at most two columns."""
    x0, y0 = a % 10, b % 10
    if a < 10 and b < 10:
        return f"{x0}+{y0}={x0 + y0}", str(x0 + y0)
    carry = (x0 + y0) // 10
    x1, y1 = a // 10, b // 10
    tens = x1 + y1 + carry
    step2 = f"{x1}+{y1}+1={tens}" if carry else f"{x1}+{y1}={tens}"
    return f"{x0}+{y0}={x0 + y0},{step2}", f"{tens}{(x0 + y0) % 10}"


def pairs(problems):
    return {(p["a"], p["b"]) for p in problems}


def test_prompt_format():
    assert PLAIN_PROMPT.format(question="What is 47 + 85?") == "What is 47 + 85?\n"


def test_split_sizes_disjoint_and_complete():
    test, train = addition_problems("test", seed=None), addition_problems("train", seed=None)
    assert len(test) == 300 and len(train) == 9700
    assert pairs(test).isdisjoint(pairs(train))
    assert pairs(test) | pairs(train) == {(a, b) for a in range(100) for b in range(100)}


def test_split_membership_does_not_depend_on_seed():
    base = pairs(addition_problems("test", seed=None))
    for seed in (0, 1, 123):
        again = addition_problems("test", seed=seed)
        assert pairs(again) == base
    # the seed reshuffles the order: two seeds, two orders; one seed, one order
    order = lambda seed: [(p["a"], p["b"]) for p in addition_problems("test", seed=seed)]  # noqa: E731
    assert order(0) == order(0)
    assert order(0) != order(1)


def test_n_takes_first_n_after_reshuffle():
    full = addition_problems("train", seed=7)
    assert addition_problems("train", n=5, seed=7) == full[:5]
    canonical = addition_problems("test", seed=None)
    assert addition_problems("test", n=10, seed=None) == canonical[:10]
    assert addition_problems("test", n=0) == []
    assert len(addition_problems("test", n=300)) == 300


def test_problem_dict():
    p = addition_problems("test", n=1)[0]
    assert set(p) == {"question", "answer", "completion", "a", "b"}
    a, b = p["a"], p["b"]
    assert p["question"] == f"What is {a} + {b}?"
    assert p["answer"] == str(a + b)
    assert p["completion"] == f"<reasoning>{reasoning_for(a, b)}</reasoning>\n<answer>{a + b}</answer>"


@pytest.mark.parametrize(
    "a, b, reasoning, answer",
    [
        (47, 85, "7+5=12,4+8+1=13", "132"),
        (5, 3, "5+3=8", "8"),
        (99, 1, "9+1=10,9+0+1=10", "100"),  # final carry: the last column's sum starts the answer
        (0, 0, "0+0=0", "0"),
        (47, 5, "7+5=12,4+0+1=5", "52"),  # a missing tens digit counts as 0
        (5, 47, "5+7=12,0+4+1=5", "52"),
        (9, 9, "9+9=18", "18"),
        (50, 50, "0+0=0,5+5=10", "100"),
        (99, 99, "9+9=18,9+9+1=19", "198"),
    ],
)
def test_reasoning_hand_cases(a, b, reasoning, answer):
    assert reasoning_for(a, b) == reasoning
    assert answer_for(a, b) == answer
    assert completion_for(a, b) == f"<reasoning>{reasoning}</reasoning>\n<answer>{answer}</answer>"


def test_every_pair_matches_independent_adder():
    for a in range(100):
        for b in range(100):
            reasoning, answer = independent_reasoning(a, b)
            assert reasoning_for(a, b) == reasoning, (a, b)
            assert answer_for(a, b) == answer == str(a + b), (a, b)


def test_all_completions_in_format():
    for p in addition_problems("train", n=500) + addition_problems("test"):
        m = COMPLETION_RE.match(p["completion"])
        assert m is not None, p["completion"]
        assert m.group(2) == p["answer"]


@pytest.mark.parametrize(
    "a, b, carry_at, reasoning, answer",
    [
        (47, 85, None, "7+5=12,4+8=12", "122"),  # forgot the carry
        (99, 1, None, "9+1=10,9+0=9", "90"),
        (27, 32, 9, "7+2=9,2+3+1=6", "69"),  # carried although the ones make only 9
        (27, 32, None, "7+2=9,2+3=5", "59"),  # nothing to carry: forgetting changes nothing
        (47, 85, 9, "7+5=12,4+8+1=13", "132"),  # a sum of 12 carries under both rules
    ],
)
def test_wrong_carry_rules(a, b, carry_at, reasoning, answer):
    assert reasoning_for(a, b, carry_at=carry_at) == reasoning
    assert answer_for(a, b, carry_at=carry_at) == answer
    assert completion_for(a, b, carry_at=carry_at).endswith(f"<answer>{answer}</answer>")


def test_has_carry():
    assert has_carry(47, 85) and has_carry(99, 1) and has_carry(5, 47)
    assert not has_carry(5, 7)  # one column: its 12 is the answer, nothing to carry into
    assert not has_carry(99, 0) and not has_carry(27, 32)
    # the ones digits make 10 or more in 45 of 100 digit pairs; all but single-digit pairs have a tens column
    n = sum(has_carry(a, b) for a in range(100) for b in range(100))
    assert n == 45 * 100 - 45


@pytest.mark.parametrize("split", ["val", "Test", "", None])
def test_bad_split(split):
    with pytest.raises(ValueError, match="split must be one of"):
        addition_problems(split)


@pytest.mark.parametrize("n", [-1, 1.5, "3", True])
def test_bad_n(n):
    with pytest.raises(ValueError, match="n must be"):
        addition_problems("test", n=n)


def test_n_larger_than_split():
    with pytest.raises(ValueError, match="only 300 problems"):
        addition_problems("test", n=301)


@pytest.mark.parametrize("a, b", [(-1, 3), (3, 2.0), ("4", 5), (True, 1)])
def test_bad_operands(a, b):
    with pytest.raises(ValueError, match="operand"):
        reasoning_for(a, b)
