"""Evaluation: Wilson intervals, the three checks, greedy evaluation of a fake model with known answers, and sampled
evaluation (pass@k and maj@k against enumeration of every k-subset, the bootstrap interval, the sampler)."""
import itertools
import math
import random
import re
from collections import Counter
from fractions import Fraction

import pytest
import torch
from torch import nn

from grpo_lib.data import build_prompt
from grpo_lib.course.evaluation import bootstrap_ci, maj_at_k, pass_at_k, pass_maj_curves, sample_answers
from grpo_lib.evaluation import EvalResult, evaluate, judge, wilson_interval
from grpo_lib.models import load_tiny_model
from grpo_lib.rewards import extract_answer_from_model_output
from grpo_lib.rollout import generate_completions
from grpo_lib.tasks import addition_problems
from grpo_lib.tokenizer import build_char_tokenizer


def wilson_by_quadratic(k, n, z=1.959963984540054):
    """Independent form: the interval is the set of p with (k/n - p)^2 <= z^2 p (1 - p) / n; solve the quadratic."""
    ph = k / n
    a = 1 + z * z / n
    b = -(2 * ph + z * z / n)
    c = ph * ph
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


def test_wilson_hand_values():
    lo, hi = wilson_interval(27, 30)                      # the tutorial's 90% on 30 questions
    assert lo == pytest.approx(0.7438, abs=1e-4) and hi == pytest.approx(0.9654, abs=1e-4)
    lo, hi = wilson_interval(0, 10)                       # never collapses to [0, 0]
    assert lo == 0.0 and hi == pytest.approx(3.8415 / 13.8415, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(1 - 3.8415 / 13.8415, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 3)
    with pytest.raises(ValueError):
        wilson_interval(-1, 3)


def test_wilson_agrees_with_the_quadratic_and_contains_the_estimate():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 2000)
        k = rng.randint(0, n)
        lo, hi = wilson_interval(k, n)
        qlo, qhi = wilson_by_quadratic(k, n)
        assert lo == pytest.approx(max(qlo, 0.0), abs=1e-9) and hi == pytest.approx(min(qhi, 1.0), abs=1e-9)
        assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_judge_hand_cases():
    good = "<reasoning>7+5=12,4+8+1=13</reasoning>\n<answer>132</answer>"
    assert judge(good, "132") == {"strict": True, "lenient": True, "format": True}
    assert judge(good, "133") == {"strict": False, "lenient": False, "format": True}
    # right number, no tags: only the lenient check passes
    assert judge("the sum is 132", "132") == {"strict": False, "lenient": True, "format": False}
    # right answer then a run-on: strict and lenient (last number 132) pass, the format does not
    assert judge(good + "\nHuman: thanks 132", "132") == {"strict": True, "lenient": True, "format": False}


# --- a fake policy that "answers" from a lookup table, so evaluation's counts are known in advance --------
QUESTIONS = {f"What is {a} + {a}?": str(2 * a) for a in range(7)}
REPLIES = {  # by a: right and well formatted (a even), wrong (a = 1, 3), untagged but right (a = 5)
    a: (f"<reasoning>{a}+{a}={2 * a}</reasoning>\n<answer>{2 * a}</answer>" if a % 2 == 0
        else f"<reasoning>x</reasoning>\n<answer>{2 * a + 1}</answer>" if a in (1, 3) else f"it is {2 * a}")
    for a in range(7)
}


class TablePolicy(nn.Module):
    """generate() decodes each left-padded prompt and appends the scripted reply plus EOS (then padding)."""

    def __init__(self, tok):
        super().__init__()
        self.tok = tok
        self.anchor = nn.Parameter(torch.zeros(1))       # gives the module a device
        self.calls = []

    def generate(self, input_ids, attention_mask, max_new_tokens, do_sample, **kwargs):
        self.calls.append({"rows": input_ids.shape[0], "do_sample": do_sample})
        replies = []
        for ids, m in zip(input_ids, attention_mask):
            question = self.tok.decode(ids[m.bool()].tolist()).strip()
            a = int(question.split()[2])
            replies.append(self.tok(REPLIES[a], add_special_tokens=False)["input_ids"][:max_new_tokens - 1]
                           + [self.tok.eos_token_id])
        T = max(len(r) for r in replies)
        tail = torch.tensor([r + [self.tok.pad_token_id] * (T - len(r)) for r in replies])
        return torch.cat([input_ids, tail], dim=1)


@pytest.fixture()
def policy():
    return TablePolicy(build_char_tokenizer())


PROBLEMS = [{"question": q, "answer": g} for q, g in QUESTIONS.items()]


@pytest.mark.parametrize("batch_size", [2, 100])
def test_evaluate_counts_known_answers(policy, batch_size):
    res = evaluate(policy, policy.tok, PROBLEMS, max_new_tokens=60, batch_size=batch_size, n_samples=2,
                   progress=False)
    # a = 0, 2, 4, 6 right and formatted; 1, 3 wrong; 5 right number without tags
    assert (res.n, res.n_strict, res.n_lenient, res.n_format) == (7, 4, 5, 6)
    assert res.strict_accuracy == pytest.approx(4 / 7) and res.lenient_accuracy == pytest.approx(5 / 7)
    assert res.format_rate == pytest.approx(6 / 7)
    assert res.strict_ci == wilson_interval(4, 7)
    assert all(not c["do_sample"] for c in policy.calls)                   # greedy decoding
    assert [c["rows"] for c in policy.calls] == ([2, 2, 2, 1] if batch_size == 2 else [7])
    assert len(res.samples) == 2
    assert res.samples[1] == {"question": "What is 1 + 1?", "answer": "2", "completion": REPLIES[1],
                              "strict": False, "lenient": False, "format": True}


def test_eval_result_reporting():
    res = EvalResult(n=30, n_strict=27, n_lenient=28, n_format=30)
    d = res.to_dict()
    assert d["strict_accuracy"] == 0.9 and d["n"] == 30 and d["format_rate"] == 1.0
    assert d["strict_ci"] == pytest.approx([0.7438, 0.9654], abs=1e-4)
    assert "90.0%" in str(res) and "n = 30" in str(res)
    assert "| strict accuracy | 90.0% | [74.4%, 96.5%] | 27 / 30 |" in res._repr_markdown_()


def test_evaluate_bad_input(policy):
    with pytest.raises(ValueError, match="at least one problem"):
        evaluate(policy, policy.tok, [], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(policy, policy.tok, PROBLEMS, batch_size=0, progress=False)


# --- pass@k and maj@k ----------------------------------------------------------------------------------------
# The references below are written apart from grpo_lib: they enumerate every k-subset of the n samples.


def pass_by_subsets(n, c, k):
    """The share of k-subsets of n samples (the first c right) that hold at least one right sample, exactly."""
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets))


def vote_of(answer, right):
    """Right samples vote for the gold; wrong ones for their number, or their text; None abstains."""
    if right:
        return "GOLD"
    if answer is None:
        return None
    try:
        return float(answer)
    except ValueError:
        return answer.strip()


def maj_by_subsets(answers, correct, k):
    """The mean over all k-subsets of the majority vote's score: 1/(number tied) if the gold is among the tied."""
    votes = [vote_of(a, r) for a, r in zip(answers, correct)]
    total, subsets = Fraction(0), list(itertools.combinations(range(len(votes)), k))
    for s in subsets:
        tally = Counter(votes[i] for i in s if votes[i] is not None)
        if not tally:
            continue                                        # nobody voted: wrong
        top = max(tally.values())
        tied = [v for v, m in tally.items() if m == top]
        if "GOLD" in tied:
            total += Fraction(1, len(tied))
    return total / len(subsets)


def test_pass_at_k_hand_values():
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)            # 3 of the 6 pairs hold the right sample
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)     # C(3,2)/C(5,2) pairs miss both right ones
    assert pass_at_k(16, 4, 1) == pytest.approx(4 / 16)        # pass@1 = c/n
    assert pass_at_k(16, 0, 16) == 0.0 and pass_at_k(16, 16, 1) == 1.0
    assert pass_at_k(16, 1, 16) == 1.0 and pass_at_k(16, 3, 14) == 1.0   # n - c < k: every subset has one
    assert pass_at_k(10, 1, 9) == pytest.approx(0.9)


def test_pass_at_k_agrees_with_enumeration_and_the_exact_binomial():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(pass_by_subsets(n, c, k)), abs=1e-12), (n, c, k)
    for n, c, k in ((200, 3, 50), (1000, 17, 999), (64, 1, 32)):
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)


def test_pass_at_k_is_stable_where_the_binomials_overflow_a_float():
    with pytest.raises(OverflowError):
        float(math.comb(2000, 1000))                        # the naive form cannot even be evaluated in floats
    assert pass_at_k(2000, 1, 1000) == pytest.approx(0.5, abs=1e-12)
    assert pass_at_k(5000, 2, 100) == pytest.approx(1 - (4900 * 4899) / (5000 * 4999), rel=1e-12)


def test_pass_at_k_is_monotone_in_k_and_c():
    for n in (1, 5, 16):
        for c in range(n + 1):
            curve = [pass_at_k(n, c, k) for k in range(1, n + 1)]
            assert all(a <= b + 1e-15 for a, b in zip(curve, curve[1:]))
            assert curve[0] == pytest.approx(c / n)
        for k in range(1, n + 1):
            by_c = [pass_at_k(n, c, k) for c in range(n + 1)]
            assert all(a <= b + 1e-15 for a, b in zip(by_c, by_c[1:]))


@pytest.mark.parametrize("n, c, k, words", [
    (4, 1, 5, "k must be in 1..n"), (4, 1, 0, "k must be in 1..n"), (4, 5, 2, "c (right samples)"),
    (4, -1, 2, "c (right samples)"), (0, 0, 1, "n (samples per problem)"), (-3, 0, 1, "n (samples per problem)"),
    (4.0, 1, 2, "n must be an int"), (4, True, 2, "c must be an int"), (4, 1, "2", "k must be an int"),
])
def test_pass_at_k_bad_input(n, c, k, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        pass_at_k(n, c, k)


def test_maj_at_k_hand_values():
    answers, correct = ["7", "7", "9", None], [True, True, False, False]
    assert maj_at_k(answers, correct, 1) == pytest.approx(2 / 4)        # = pass@1
    assert maj_at_k(answers, correct, 2) == pytest.approx(4 / 6)        # {7,7} 1, {7,9} ×2 ties 1/2, {7,None} ×2 1
    assert maj_at_k(answers, correct, 3) == pytest.approx(3 / 4)        # {7,7,9} {7,7,None} 1; {7,9,None} ×2 1/2
    assert maj_at_k(answers, correct, 4) == 1.0
    # a right answer in the minority: maj@k falls with k while pass@k rises
    minority = (["3", "5", "5", "5"], [True, False, False, False])
    assert [maj_at_k(*minority, k) for k in (1, 2, 3, 4)] == pytest.approx([1 / 4, 1 / 4, 0.0, 0.0])
    assert [pass_at_k(4, 1, k) for k in (1, 2, 3, 4)] == pytest.approx([1 / 4, 1 / 2, 3 / 4, 1.0])
    # a right answer that is the plurality but not the majority: maj@n = 1 > pass@1 = 0.4
    plural = (["10"] * 4 + ["11", "11", "12", "12", None, None], [True] * 4 + [False] * 6)
    assert maj_at_k(*plural, 10) == 1.0 and pass_at_k(10, 4, 1) == pytest.approx(0.4)
    # "5" and "5.0" are one wrong answer: 2 votes beat the right one, not a three-way tie
    assert maj_at_k(["5", "5.0", "7"], [False, False, True], 3) == 0.0
    assert maj_at_k(["5", "five", "7"], [False, False, True], 3) == pytest.approx(1 / 3)
    # nobody votes: 0; nobody right: 0
    assert maj_at_k([None, None], [False, False], 2) == 0.0
    assert maj_at_k(["1", "2", "2"], [False, False, False], 2) == 0.0


def test_maj_at_k_agrees_with_enumeration():
    rng = random.Random(0)
    pool = ["12", "12.0", "13", "14", " 13 ", "x", None]
    for case in range(300):
        n = rng.randint(1, 9)
        answers = [rng.choice(pool) for _ in range(n)]
        correct = [a is not None and rng.random() < 0.4 for a in answers]
        for k in range(1, n + 1):
            got = maj_at_k(answers, correct, k)
            assert got == pytest.approx(float(maj_by_subsets(answers, correct, k)), abs=1e-12), (answers, correct, k)


def test_maj_at_k_never_exceeds_pass_at_k_and_equals_it_at_k_1():
    rng = random.Random(1)
    for case in range(200):
        n = rng.randint(1, 16)
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
        correct = [a == "1" for a in answers]
        c = sum(correct)
        assert maj_at_k(answers, correct, 1) == pytest.approx(c / n) == pytest.approx(pass_at_k(n, c, 1))
        for k in range(1, n + 1):
            assert 0.0 <= maj_at_k(answers, correct, k) <= pass_at_k(n, c, k) + 1e-12


def test_maj_at_k_fair_ties_make_even_k_no_better_than_the_odd_k_below():
    """With a fair draw on ties: maj@2 = maj@1 when every sample answers (a split pair is a coin flip), and with a
    single wrong answer maj@2m = maj@(2m - 1) (the extra vote only ever turns a win into a tie or a tie into a
    loss, symmetrically)."""
    rng = random.Random(2)
    for case in range(100):
        n = rng.randint(2, 12)
        answers = [rng.choice(["1", "2", "3"]) for _ in range(n)]
        correct = [a == "1" for a in answers]
        assert maj_at_k(answers, correct, 2) == pytest.approx(maj_at_k(answers, correct, 1), abs=1e-12)
        two = ["1" if ok else "2" for ok in correct]
        for m in range(1, n // 2 + 1):
            assert maj_at_k(two, correct, 2 * m) == pytest.approx(maj_at_k(two, correct, 2 * m - 1), abs=1e-12)
    assert maj_at_k(["1", None], [True, False], 2) == 1.0 > maj_at_k(["1", None], [True, False], 1)   # abstention


def test_maj_at_k_bad_input():
    with pytest.raises(ValueError, match="one entry per sample"):
        maj_at_k(["1", "2"], [True], 1)
    with pytest.raises(ValueError, match="marked right but has no answer"):
        maj_at_k(["1", None], [False, True], 1)
    with pytest.raises(ValueError, match=re.escape("correct[1] must be a bool")):
        maj_at_k(["1", "2"], [True, 1], 1)
    with pytest.raises(ValueError, match="k must be in 1..n"):
        maj_at_k(["1", "2"], [True, False], 3)
    with pytest.raises(ValueError, match="not strings"):
        maj_at_k("12", [True, False], 1)
    with pytest.raises(ValueError, match="n .samples per problem. must be >= 1"):
        maj_at_k([], [], 1)


# --- the bootstrap interval over problems ----------------------------------------------------------------------


def test_bootstrap_ci_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 3, generator=g, dtype=torch.float64)
    low, high = bootstrap_ci(x)
    assert low.shape == high.shape == (3,)
    assert (low < x.mean(0)).all() and (x.mean(0) < high).all()
    for j in range(3):                                      # the same resamples for every column
        lo_j, hi_j = bootstrap_ci(x[:, j])
        assert lo_j.shape == () and lo_j.item() == pytest.approx(low[j].item(), abs=1e-12)
        assert hi_j.item() == pytest.approx(high[j].item(), abs=1e-12)
    assert torch.equal(bootstrap_ci(x, seed=0)[0], low)     # reproducible
    assert not torch.equal(bootstrap_ci(x, seed=1)[0], low)
    lo, hi = bootstrap_ci([0.75] * 10)                      # every problem alike: zero width, at the value
    assert lo.item() == pytest.approx(0.75) and hi.item() == pytest.approx(0.75)
    lo80, hi80 = bootstrap_ci(x, level=0.8)
    assert (lo80 >= low).all() and (hi80 <= high).all()      # a lower level gives a narrower interval


def test_bootstrap_ci_agrees_with_the_normal_interval_on_a_large_sample():
    """For P = 2000 0/1 values the mean is close to normal: the percentile interval ≈ p̂ ± 1.96·sqrt(p̂(1-p̂)/P)."""
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(2000, generator=g) < 0.3).double()
    p, P = x.mean().item(), x.numel()
    half = 1.959963984540054 * math.sqrt(p * (1 - p) / P)
    lo, hi = bootstrap_ci(x, n_boot=4000)
    assert lo.item() == pytest.approx(p - half, abs=0.1 * half) and hi.item() == pytest.approx(p + half, abs=0.1 * half)


@pytest.mark.parametrize("kwargs, words", [
    (dict(values=[0.5]), "P >= 2"), (dict(values=[[[0.5]]] * 3), "shape (P,) or (P, K)"),
    (dict(values=[0.5, float("nan")]), "finite"), (dict(values=[0.5, 1.0], level=1.0), "level"),
    (dict(values=[0.5, 1.0], n_boot=10), "n_boot"),
])
def test_bootstrap_ci_bad_input(kwargs, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        bootstrap_ci(**kwargs)


# --- sampling n completions per problem, and the curves ---------------------------------------------------------


def test_sample_answers_judges_each_sample(policy):
    """The scripted policy writes the same reply n times: the answers and verdicts are known per problem."""
    samples = sample_answers(policy, policy.tok, PROBLEMS, n=3, max_new_tokens=60, batch_size=4)
    assert [s["question"] for s in samples] == list(QUESTIONS) and all(len(s["correct"]) == 3 for s in samples)
    assert [s["correct"][0] for s in samples] == [True, False, True, False, True, False, True]
    assert samples[1]["answers"] == ["3"] * 3 and samples[5]["answers"] == [None] * 3   # a = 5 writes no tags
    assert samples[2] == {"question": "What is 2 + 2?", "answer": "4", "answers": ["4"] * 3, "correct": [True] * 3}
    assert [c["rows"] for c in policy.calls] == [4 * 3, 3 * 3] and all(c["do_sample"] for c in policy.calls)


def test_sample_answers_are_the_rollout_samplers():
    """The tiny model: the same tokens as generate_completions with the batch's seed, judged by `judge`."""
    model, tok = load_tiny_model()
    problems = addition_problems("test", n=3, seed=None)
    samples = sample_answers(model, tok, problems, n=4, temperature=1.0, max_new_tokens=40, batch_size=2, seed=7)
    for b, start in enumerate((0, 2)):
        batch = problems[start:start + 2]
        rollout = generate_completions(model, tok, [build_prompt(tok, p["question"]) for p in batch], 4,
                                       max_new_tokens=40, temperature=1.0, seed=7 + b)
        for i, p in enumerate(batch):
            s = samples[start + i]
            assert s["answers"] == [extract_answer_from_model_output(t) for t in rollout.group(i)]
            assert s["correct"] == [judge(t, p["answer"])["strict"] for t in rollout.group(i)]
    assert sample_answers(model, tok, problems, n=4, batch_size=2, seed=7) == samples      # reproducible
    threads = torch.get_num_threads()
    seen = []
    real = torch.set_num_threads
    try:
        torch.set_num_threads = lambda k: (seen.append(k), real(k))                       # noqa: E731
        sample_answers(model, tok, problems[:1], n=2, batch_size=2, num_threads=1)
    finally:
        torch.set_num_threads = real
    assert seen == [1, threads] and torch.get_num_threads() == threads                  # set, then restored


def test_sample_answers_bad_input(policy):
    with pytest.raises(ValueError, match="at least one problem"):
        sample_answers(policy, policy.tok, [])
    with pytest.raises(ValueError, match="n .samples per problem"):
        sample_answers(policy, policy.tok, PROBLEMS, n=0)
    with pytest.raises(ValueError, match="batch_size"):
        sample_answers(policy, policy.tok, PROBLEMS, batch_size=0)
    with pytest.raises(ValueError, match="num_threads"):
        sample_answers(policy, policy.tok, PROBLEMS, num_threads=0)


def test_pass_maj_curves_average_the_per_problem_estimators():
    samples = [{"answers": ["7", "7", "9", None], "correct": [True, True, False, False]},
               {"answers": ["3", "5", "5", "5"], "correct": [True, False, False, False]},
               {"answers": ["1", "1", "1", "1"], "correct": [True] * 4}]
    curves = pass_maj_curves(samples, [1, 2, 4])
    assert curves["k"] == [1, 2, 4]
    expected_pass = torch.tensor([[0.5, 5 / 6, 1.0], [0.25, 0.5, 1.0], [1, 1, 1]], dtype=torch.float64)
    expected_maj = torch.tensor([[0.5, 4 / 6, 1.0], [0.25, 0.25, 0.0], [1, 1, 1]], dtype=torch.float64)
    assert torch.allclose(curves["pass_per_problem"], expected_pass) and torch.allclose(curves["maj_per_problem"], expected_maj)
    assert curves["maj"].tolist() == pytest.approx([(0.5 + 0.25 + 1) / 3, (4 / 6 + 0.25 + 1) / 3, 2 / 3])
    low, high = curves["pass_ci"]
    assert torch.equal(low, bootstrap_ci(curves["pass_per_problem"])[0]) and (high >= curves["pass"]).all()
    with pytest.raises(ValueError, match="same number of samples"):
        pass_maj_curves([samples[0], {"answers": ["1"], "correct": [True]}], [1])
    with pytest.raises(ValueError, match="at least 2 problems"):
        pass_maj_curves(samples[:1], [1])
