"""Evaluation: Wilson intervals, the three checks, and greedy evaluation of a fake model with known answers."""
import math
import random

import pytest
import torch
from torch import nn

from grpo_lib.evaluation import EvalResult, evaluate, judge, wilson_interval
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
