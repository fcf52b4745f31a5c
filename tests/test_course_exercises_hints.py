"""The fill-in exercises of notebooks 01-06 (1.1, 2.1, 2.2, 3.2, 4.1, 4.2, 5.1, 5.2, 6.2) and their progressive hints.

Each checker, both ways: it accepts an answer written independently of its reference, rejects each plausible
wrong answer with the nudge that names it, never raises whatever the answer does, and keeps its key step (the
formula) out of the first messages: a blank exercise never shows it (Run All on a student copy), a wrong answer
shows it only from the `SHOW_KEY_STEP_AFTER`-th wrong answer on, and `hint("N.K")` shows it on request.
"""
import itertools
import math

import pytest
import torch

from grpo_lib.course.exercises import checking as ck
from grpo_lib.course.exercises import ex01, ex02, ex03, ex04, ex05, ex06, ex07
from grpo_lib.course.evaluation import fisher_exact_2x2


@pytest.fixture(autouse=True)
def fresh_attempts():
    ck.reset_attempts()
    yield
    ck.reset_attempts()


def blank(exercise):
    def fn(*args):
        # YOUR CODE HERE
        raise NotImplementedError(f"Exercise {exercise}")
    return fn


def fisher_by_tables(k1, n1, k2, n2):
    """Written apart from the reference: enumerate every table with the same margins, in integer weights."""
    K = k1 + k2
    weights = {x: math.comb(n1, x) * math.comb(n2, K - x) for x in range(n1 + 1) if 0 <= K - x <= n2}
    return sum(w for w in weights.values() if w <= weights[k1]) / sum(weights.values())


def kl_by_loop(lg, lr_):
    """KL(softmax(lg) ‖ softmax(lr_)) at every position, one position at a time (written apart from ex04)."""
    out = torch.zeros(lg.shape[:-1])
    for idx in itertools.product(*map(range, lg.shape[:-1])):
        p, q = torch.softmax(lg[idx].double(), -1), torch.softmax(lr_[idx].double(), -1)
        out[idx] = float(sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()) if pi > 0))
    return out


def per_completion(kl, m):
    """loss_type 'grpo''s average: each completion's masked mean, then the mean over completions."""
    return sum(float((kl[i] * m[i]).sum() / m[i].sum()) for i in range(len(m))) / len(m)


C = math.sqrt(4 / 3)
EXERCISES = {
    # exercise: (checker, its key step, its nudge, an independent right answer, [(wrong answer, words of its nudge)])
    "1.1": (ex01.check_loo_advantages, ex01.LOO_KEY, ex01.LOO_NUDGE,
            lambda r: torch.stack([r[i] - torch.cat([r[:i], r[i + 1:]]).mean() for i in range(len(r))]),
            [(lambda r: r - r.mean(), "r_i is still inside its own baseline"),
             (lambda r: (r - r.mean()) / (r.std() + 1e-4), "GRPO's advantage"),
             (lambda r: r - (r.sum() - r) / len(r), "divides by G - 1"),
             (lambda r: (r.sum() - r) / (len(r) - 1) - r, "sign is flipped")]),
    "2.1": (ex02.check_flat_fraction, ex02.FLAT_KEY, ex02.FLAT_NUDGE,
            lambda p, G: sum(sum(float(x) ** G for x in row) for row in p) / len(p),
            [(lambda p, G: float((p.mean(0) ** G).sum()), "averaged the questions first"),
             (lambda p, G: float((p[:, 0] ** G + p[:, -1] ** G).mean()), "middle reward value"),
             (lambda p, G: float((p ** G).sum()), "a share is per question")]),
    "2.2": (ex02.check_population_settings, ex02.STD_KEY, ex02.STD_NUDGE,
            lambda lr, beta, G: (lr * math.sqrt(G / (G - 1)), beta * math.sqrt((G - 1) / G)),
            [(lambda lr, beta, G: (lr * C, beta), "does β's term see the std"),
             (lambda lr, beta, G: (lr / C, beta * C), "which std is larger")]),
    "3.2": (ex03.check_fisher, ex03.FISHER_KEY, ex03.FISHER_NUDGE, fisher_by_tables,
            [(lambda k1, n1, k2, n2: math.comb(n1, k1) * math.comb(n2, k2) / math.comb(n1 + n2, k1 + k2),
              "exactly the split you saw"),
             (lambda k1, n1, k2, n2: sum(math.comb(n1, x) * math.comb(n2, k1 + k2 - x) for x in range(0, k1 + 1)
                                         if 0 <= k1 + k2 - x <= n2) / math.comb(n1 + n2, k1 + k2), "one-sided")]),
    "4.1": (ex04.check_clipped_tokens, ex04.CLIP_KEY, ex04.CLIP_NUDGE,
            lambda rho, A, eps: torch.where(A[:, None] > 0, rho > 1 + eps,
                                            torch.where(A[:, None] < 0, rho < 1 - eps, torch.zeros_like(rho).bool())),
            [(lambda rho, A, eps: (rho < 1 - eps) | (rho > 1 + eps), "every ratio outside"),
             (lambda rho, A, eps: ((A[:, None] < 0) & (rho > 1 + eps)) | ((A[:, None] > 0) & (rho < 1 - eps)),
              "sides are swapped")]),
    "4.2": (ex04.check_exact_kl, ex04.KL_KEY, ex04.KL_NUDGE,
            lambda lg, lr_, m: per_completion(kl_by_loop(lg, lr_), m),
            [(lambda lg, lr_, m: per_completion(kl_by_loop(lr_, lg), m), "KL(π_ref ‖ π_θ)"),
             (lambda lg, lr_, m: per_completion((lg.softmax(-1) * (lg - lr_)).sum(-1), m),
              "logits are not log-probabilities"),
             (lambda lg, lr_, m: (kl_by_loop(lg, lr_) * m).sum() / m.sum(), "token mean over the whole batch")]),
    "5.1": (ex05.check_completion_mask, ex05.MASK_KEY, ex05.MASK_NUDGE,
            lambda ids, eos: torch.stack([torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long),
                                                                   torch.isin(row, torch.tensor(eos)).long()[:-1]]), 0) == 0
                                          for row in ids]),
            [(lambda ids, eos: torch.ones_like(ids), "kept tokens after the stop token"),
             (lambda ids, eos: (torch.cumsum(torch.isin(ids, torch.tensor(eos)).long(), -1) == 0), "left out the stop token")]),
    "6.1": (ex06.check_dapo_normaliser, ex06.DAPO_KEY, ex06.DAPO_NUDGE,
            lambda masks, rank: sum(int(m.sum()) for m in masks) / len(masks),
            [(lambda masks, rank: masks[rank].sum(), "per-rank normalisation"),
             (lambda masks, rank: sum(int(m.sum()) for m in masks), "Divide N by K")]),
    "6.2": (ex06.check_decode_floor, ex06.DECODE_KEY, ex06.DECODE_NUDGE,
            lambda n, b, T, B, bw, P, kv: sum(n * b + B * kv * (P + s) for s in range(T)) / bw,
            [(lambda n, b, T, B, bw, P, kv: T * n * b / bw, "leaves out the KV cache"),
             (lambda n, b, T, B, bw, P, kv: sum(B * (n * b + kv * (P + s)) for s in range(T)) / bw,
              "once per row"),
             (lambda n, b, T, B, bw, P, kv: sum(n * b + B * kv * (P + s + 1) for s in range(T)) / bw,
              "the t - 1 generated before")]),
    "7.1": (ex07.check_offpolicy_kl, ex07.KL_KEY, ex07.KL_NUDGE,
            lambda pt, po, pr: (float((po * (pr / pt - torch.log(pr / pt) - 1)).sum()),
                                float((pt * torch.log(pt / pr)).sum())),
            [(lambda pt, po, pr: (float((pt * torch.log(pt / pr)).sum()),) * 2, "plain k3 on tokens from π_old"),
             (lambda pt, po, pr: (float((po * (pr / pt - torch.log(pr / pt) - 1)).sum()),) * 2,
              "needs the importance weight")]),
    "7.2": (ex07.check_entropy_change_pg, ex07.ENTROPY_KEY, ex07.ENTROPY_NUDGE,
            lambda z, A, eta: float(-sum(p * (lp - (z.softmax(-1) * z.log_softmax(-1)).sum()) * eta * p
                                         * (a - (z.softmax(-1) * A).sum())
                                         for p, lp, a in zip(z.softmax(-1), z.log_softmax(-1), A))),
            [(lambda z, A, eta: float(-eta * ((z.softmax(-1) * z.log_softmax(-1) * A).sum()
                                              - (z.softmax(-1) * z.log_softmax(-1)).sum() * (z.softmax(-1) * A).sum())),
              "natural-gradient step")]),
    "5.2": (ex05.check_maj_two_answers, ex05.MAJ_KEY, ex05.MAJ_NUDGE,
            lambda n, c, k: sum(math.comb(c, t) * math.comb(n - c, k - t) * (2 * t > k) for t in range(k + 1)) / math.comb(n, k)
            + (math.comb(c, k // 2) * math.comb(n - c, k // 2) / math.comb(n, k) / 2 if k % 2 == 0 else 0.0),
            [(lambda n, c, k: 1 - math.comb(n - c, k) / math.comb(n, k), "that is pass@k"),
             (lambda n, c, k: sum(math.comb(k, t) * (c / n) ** t * (1 - c / n) ** (k - t) for t in range(k + 1) if 2 * t > k),
              "with replacement")]),
}


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_accepts_an_independent_right_answer(exercise, capsys):
    check, *_, right, _ = EXERCISES[exercise]
    assert check(right)
    out = capsys.readouterr().out
    assert out.startswith("✓") and "✗" not in out, out


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_rejects_each_plausible_wrong_answer_with_its_nudge_and_no_formula(exercise, capsys):
    check, key, *_ = EXERCISES[exercise]
    for wrong, nudge in EXERCISES[exercise][4]:
        ck.reset_attempts()
        assert not check(wrong)
        out = capsys.readouterr().out
        assert out.startswith("✗ Not yet. For ") and nudge in out, out
        assert key not in out and f'hint("{exercise}")' in out


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_a_blank_exercise_never_shows_the_key_step(exercise, capsys):
    check, key, nudge, *_ = EXERCISES[exercise]
    for _ in range(ck.SHOW_KEY_STEP_AFTER + 2):                    # Run All, again and again
        assert not check(blank(exercise))
        out = capsys.readouterr().out
        assert out.startswith(f"✗ Not yet: Exercise {exercise} is not filled in yet.") and nudge in out, out
        assert key not in out


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_key_step_after_repeated_wrong_answers_or_on_request(exercise, capsys):
    check, key, nudge, _, wrongs = EXERCISES[exercise]
    for attempt in range(1, ck.SHOW_KEY_STEP_AFTER + 1):
        check(wrongs[0][0])
        out = capsys.readouterr().out
        assert (key in out) == (attempt >= ck.SHOW_KEY_STEP_AFTER), (attempt, out)
    ck.reset_attempts(exercise)
    first = ck.hint(exercise)                                      # the first call: the nudge, never the key step
    assert first.startswith(f"Exercise {exercise}, hint 1: {nudge}") and key not in first
    assert ck.hint(exercise) == f"Exercise {exercise}, hint 2: {key}"            # asked again: the key step
    assert ck.hint(exercise, 1).startswith(f"Exercise {exercise}, hint 1: {nudge}")
    assert ck.hint(exercise, 2) == f"Exercise {exercise}, hint 2: {key}"
    assert capsys.readouterr().out.count(f"Exercise {exercise}, hint") == 4


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
@pytest.mark.parametrize("bad", [lambda *a: None, lambda *a: "text", lambda *a: 1 / 0, lambda *a: float("nan"),
                                 lambda *a: torch.zeros(99), lambda *a: (1, 2, 3), lambda *a: [[None]]],
                         ids=["None", "str", "raises", "nan", "shape", "tuple", "ragged"])
def test_never_raises(exercise, bad, capsys):
    result = EXERCISES[exercise][0](bad)
    assert isinstance(result, ck.CheckResult) and not result
    assert capsys.readouterr().out.startswith("✗")


def test_hint_levels_and_unknown_exercises(capsys):
    ex01.check_loo_advantages(blank("1.1"))
    capsys.readouterr()
    assert "No hints for exercise '9.9'" in ck.hint("9.9") and "1.1" in ck.hint("9.9")
    assert "level must be 1" in ck.hint("1.1", 3)


def test_a_checker_without_key_step_prints_exactly_as_before(capsys):
    """run_cases without key_step: the messages of the checkers written before progressive hints are unchanged."""
    kw = dict(exercise="9.1", blank_hint="b", error_hint="e", read=lambda g, c: g, matches=lambda a, b: a == b,
              hint=lambda c, v: "h", show=str, success="ok")
    for _ in range(ck.SHOW_KEY_STEP_AFTER + 1):
        assert ck.run_cases(lambda x: 1, [ck.Case("c", (0,), 2)], **kw).message == \
            "✗ Not yet. For c expected 2, got 1.\n  Hint: h"
    assert ck.run_cases(blank("9.1"), [ck.Case("c", (0,), 2)], **kw).message == \
        "✗ Not yet: Exercise 9.1 is not filled in yet.\n  Hint: b"


def test_fisher_exact_hand_numbers():
    # 34 right of 39 split 9 / 30: P(x) for x = 4..9 right in the first sample; the observed x = 7 has P = 0.2539
    p = {x: math.comb(9, x) * math.comb(30, 34 - x) / math.comb(39, 34) for x in range(4, 10)}
    assert [round(v, 4) for v in p.values()] == [0.0002, 0.0066, 0.0635, 0.2539, 0.4284, 0.2475]
    assert fisher_exact_2x2(7, 9, 27, 30) == pytest.approx(0.5716, abs=1e-4)
    assert fisher_exact_2x2(7, 9, 27, 30) == pytest.approx(fisher_exact_2x2(27, 30, 7, 9))
    assert fisher_exact_2x2(5, 10, 5, 10) == pytest.approx(1.0)
    assert fisher_exact_2x2(1, 10, 9, 10) == pytest.approx(2 * (1 + 100) / math.comb(20, 10))
    for bad in ((10, 9, 1, 1), (-1, 3, 0, 3), (1.5, 3, 0, 3)):
        with pytest.raises(ValueError, match="0 <= k <= n"):
            fisher_exact_2x2(*bad)


def test_loo_estimate_is_unbiased_and_group_mean_is_three_quarters():
    """The claim exercise 1.1 rests on, by exact enumeration of the 81 groups of 4 (notebook 01, §1.6)."""
    logits, rewards = torch.tensor([0.5, 0.0, -0.5]), torch.tensor([1.0, 0.0, 2.0])
    p = torch.softmax(logits, -1)
    grad_J = p * (rewards - (p * rewards).sum())
    assert torch.allclose(ex01.expected_estimate(ex01.loo_advantages, logits, rewards, 4), grad_J, atol=1e-6)
    assert torch.allclose(ex01.expected_estimate(lambda r: r - r.mean(), logits, rewards, 4), 0.75 * grad_J, atol=1e-6)


def test_exercise_1_4_kl_pull_numbers_in_teaching_md():
    """docs/teaching.md, exercise 1.4: μ = 2, lr 3, the worked group; the second update's gradient."""
    from grpo_lib.toy import ToyPolicy, grpo_step
    grads = {}
    for beta in (0.0, 0.04):
        pi = ToyPolicy()
        step = grpo_step(pi, torch.optim.SGD(pi.parameters(), lr=3.0), [0, 1, 2], epsilon=0.2, beta=beta, mu=2)
        grads[beta] = step.grad
        assert step.stats["clip_fraction"].item() == pytest.approx(2 / 3)
    assert torch.equal(grads[0.0], torch.zeros(3))
    assert torch.allclose(grads[0.04], torch.tensor([0.0035, -0.0329, 0.0294]), atol=1e-4)


def test_std_choice_with_sgd_and_adam():
    """Notebook 02's claim, measured on the toy: population std = sample std with (c·lr, β/c) under SGD."""
    assert torch.allclose(ex02.toy_run(0, 0.5, 0.0), ex02.toy_run(1, 0.5 * C, 0.0), atol=1e-6)     # β = 0: lr only
    assert not torch.allclose(ex02.toy_run(0, 0.5, 0.04), ex02.toy_run(1, 0.5 * C, 0.04), atol=1e-3)
    assert torch.allclose(ex02.toy_run(0, 0.5, 0.04), ex02.toy_run(1, 0.5 * C, 0.04 / C), atol=1e-6)


def test_each_new_checker_called_by_name(capsys):
    """The reference answers pass when each checker is called by its own name (as the notebooks call them),
    where the exercise has no library answer to hand in; the others are in test_course_exercises_references."""
    assert ex01.check_loo_advantages(ex01.loo_advantages)
    assert ex02.check_flat_fraction(ex02.flat_fraction)
    assert ex02.check_population_settings(lambda lr, beta, G: (lr * math.sqrt(G / (G - 1)), beta / math.sqrt(G / (G - 1))))
    assert ex04.check_clipped_tokens(ex04.clipped_tokens)
    assert capsys.readouterr().out.count("✓ Correct") == 4
