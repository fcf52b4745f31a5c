"""Tests for grpo_lib.toy: the 2+3 world of notebook 01, with the tutorial's hand-computed numbers."""
import math
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grpo_lib.advantages import group_advantages
from grpo_lib.toy import (
    ANSWERS,
    QUESTION,
    WORKED_GROUP,
    ToyPolicy,
    grpo_step,
    score_answer,
    train_toy,
)

FLOORED_ONE = 1 / (1 + 1e-4)          # 1 / (sample std 1 + std_floor 1e-4) = 0.99990001


# --- the scorer -----------------------------------------------------------------------------------

def test_the_worked_examples_scores_are_1_0_2():
    assert QUESTION == "What is 2 + 3?"
    assert ANSWERS == ("5", "6", "2 + 3 = 5")
    assert [score_answer(o) for o in ANSWERS] == [1.0, 0.0, 2.0]
    assert [ANSWERS[k] for k in WORKED_GROUP] == ["5", "6", "2 + 3 = 5"]


@pytest.mark.parametrize("text, r", [
    ("5", 1.0), (" 5 ", 1.0), ("5.", 1.0), ("5.0", 1.0), ("The answer is 5", 1.0),
    ("2+3=5", 2.0), ("2 +3 =   5", 2.0), ("Since 2 + 3 = 5, the answer is 5.", 2.0),
    ("6", 0.0), ("2 + 3 = 6", 0.0), ("-5", 0.0), ("55", 0.0), ("five", 0.0), ("", 0.0),
    ("٥", 0.0),                # only ASCII digits count as the answer
    ("2 + 3 =", 0.0),          # working but the last number is 3, not the answer
    ("5 = 2 + 3", 0.0),        # the final answer is the last number: 3
])
def test_score_answer_rule(text, r):
    assert score_answer(text) == r


def test_score_answer_refuses_non_strings_clearly():
    with pytest.raises(TypeError, match="string"):
        score_answer(5)
    with pytest.raises(TypeError, match="NoneType"):
        score_answer(None)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_score_answer_gives_a_defined_score_for_any_text(text):
    r = score_answer(text)
    assert r in (0.0, 1.0, 2.0)
    if r > 0:
        assert "5" in text                    # a positive score needs the digit 5 somewhere
    assert score_answer(text + " 6") == 0.0   # the last number decides: now it is 6, wrong


def test_score_answer_is_fast_on_huge_adversarial_text():
    texts = ["2" + " " * 200_000, "2 + " * 50_000 + "5", "9" * 200_000, "2 +3 =" * 30_000 + "5"]
    t0 = time.perf_counter()
    scores = [score_answer(t) for t in texts]
    assert time.perf_counter() - t0 < 1.0
    assert scores == [0.0, 1.0, 0.0, 2.0]


# --- the 2+3 advantages ---------------------------------------------------------------------------

def test_worked_group_advantages_sample_population_and_floor():
    r = torch.tensor([[1.0, 0.0, 2.0]])                                   # (N=1, G=3)
    assert r.mean().item() == 1.0                                         # step 3: the group mean
    # sample std = sqrt(((0)^2 + (-1)^2 + 1^2) / (3 - 1)) = 1 exactly, so A = r - mean
    assert torch.equal(group_advantages(r, std_floor=0.0), torch.tensor([[0.0, -1.0, 1.0]]))
    # population std = sqrt(2/3): A = ±sqrt(3/2) = ±1.2247
    pop = math.sqrt(1.5)
    assert torch.allclose(group_advantages(r, ddof=0, std_floor=0.0), torch.tensor([[0.0, -pop, pop]]))
    # TRL's floor: ±1/(1 + 1e-4)
    assert torch.allclose(group_advantages(r), torch.tensor([[0.0, -FLOORED_ONE, FLOORED_ONE]]), atol=1e-7)


# --- the policy -----------------------------------------------------------------------------------

def test_policy_starts_uniform_and_log_prob_matches_probs():
    pi = ToyPolicy()
    assert torch.allclose(pi.probs(), torch.full((3,), 1 / 3))
    o = torch.tensor([2, 0, 2, 1])
    assert pi.log_prob(o).shape == (4,)
    pi2 = ToyPolicy([1.0, -2.0, 0.5])
    assert torch.allclose(pi2.log_prob(o).exp(), pi2.probs()[o])
    assert torch.allclose(pi2.probs().sum(), torch.tensor(1.0))


def test_policy_sampling_is_seeded_and_follows_probs():
    pi = ToyPolicy([0.0, -1.0, 1.0])
    a = pi.sample(20, torch.Generator().manual_seed(3))
    b = pi.sample(20, torch.Generator().manual_seed(3))
    assert a.dtype == torch.long and a.shape == (20,) and torch.equal(a, b)
    many = pi.sample(40_000, torch.Generator().manual_seed(0))
    freq = torch.bincount(many, minlength=3).float() / many.numel()
    assert torch.allclose(freq, pi.probs().detach(), atol=0.01)


def test_policy_refuses_bad_input():
    with pytest.raises(ValueError, match="shape"):
        ToyPolicy(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="finite"):
        ToyPolicy([0.0, float("nan"), 0.0])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        ToyPolicy().log_prob([0, 3])
    with pytest.raises(TypeError, match="integers"):
        ToyPolicy().log_prob(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="G"):
        ToyPolicy().sample(0)


# --- one GRPO step --------------------------------------------------------------------------------

def _sgd(pi, lr=1.0):
    return torch.optim.SGD(pi.parameters(), lr=lr)


def test_grpo_step_on_the_worked_group_matches_reinforce_by_hand():
    pi = ToyPolicy()
    rec = grpo_step(pi, _sgd(pi, lr=0.3), WORKED_GROUP, epsilon=0.2, beta=0.04)
    A = torch.tensor([0.0, -FLOORED_ONE, FLOORED_ONE])
    assert torch.equal(rec.r, torch.tensor([1.0, 0.0, 2.0]))
    assert torch.allclose(rec.A, A, atol=1e-7)
    # At ρ = 1 the loss is -(1/G) Σ A_i ρ_i = 0 (A sums to 0), but its gradient is not 0:
    # ∂/∂θ [-(1/G) Σ_i A_i log π(o_i)] = -(1/G) Σ_i A_i (e_{o_i} - π) = -A / 3 here (each answer once, ΣA = 0).
    assert rec.loss.item() == 0.0
    assert torch.allclose(rec.grad, -A / 3, atol=1e-7)
    assert rec.grad[0].item() == 0.0                                       # "keep" the A = 0 answer
    assert float(rec.stats["ratio_mean"]) == pytest.approx(1.0)
    assert float(rec.stats["clip_fraction"]) == 0.0
    assert float(rec.stats["kl"]) == pytest.approx(0.0, abs=1e-7)
    # SGD: θ ← θ - lr · grad, so the logit of "5" did not move, "6" went down, "2 + 3 = 5" went up
    assert torch.allclose(pi.logits.detach(), 0.3 * A / 3, atol=1e-7)
    assert pi.logits[0].item() == 0.0


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_all_equal_group_gives_exactly_zero_gradient_and_no_change(opt, beta):
    pi = ToyPolicy([0.3, -0.2, 0.1])
    before = pi.logits.detach().clone()
    optimizer = _sgd(pi) if opt == "sgd" else torch.optim.Adam(pi.parameters(), lr=0.1)
    rec = grpo_step(pi, optimizer, [2, 2, 2], epsilon=0.2, beta=beta)          # r = (2, 2, 2)
    assert torch.equal(rec.r, torch.tensor([2.0, 2.0, 2.0]))
    assert torch.equal(rec.A, torch.zeros(3))
    assert torch.equal(rec.grad, torch.zeros(3))
    assert torch.equal(pi.logits.detach(), before)


def test_all_equal_group_still_feels_the_kl_pull_when_pi_ref_differs():
    # A = 0, but with β > 0 and π_θ ≠ π_ref the KL term alone gives a gradient (trl PR #7068).
    pi = ToyPolicy([0.0, 0.0, 1.0])
    rec = grpo_step(pi, _sgd(pi), [2, 2, 2], epsilon=0.2, beta=0.04, ref_logits=torch.zeros(3))
    assert torch.equal(rec.A, torch.zeros(3))
    assert rec.grad.abs().sum() > 0
    assert rec.grad[2] > 0          # descent lowers the logit that drifted above π_ref


def test_mu_2_second_update_is_fully_clipped():
    # lr = 3: after the first update ρ("2 + 3 = 5") ≈ 2.0 > 1 + ε with A > 0 and ρ("6") ≈ 0.27 < 1 - ε
    # with A < 0, so both are clipped and "5" has A = 0: the second update has exactly zero gradient.
    pi = ToyPolicy()
    rec = grpo_step(pi, _sgd(pi, lr=3.0), WORKED_GROUP, epsilon=0.2, beta=0.0, mu=2)
    assert float(rec.stats["clip_fraction"]) == pytest.approx(2 / 3)
    assert torch.equal(rec.grad, torch.zeros(3))
    assert torch.allclose(pi.logits.detach(), torch.tensor([0.0, -FLOORED_ONE, FLOORED_ONE]), atol=1e-6)


def test_grpo_step_refuses_bad_groups():
    pi = ToyPolicy()
    with pytest.raises(ValueError, match="G >= 2"):
        grpo_step(pi, _sgd(pi), [2], epsilon=0.2, beta=0.0)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        grpo_step(pi, _sgd(pi), [0, 1, 5], epsilon=0.2, beta=0.0)
    with pytest.raises(ValueError, match="mu"):
        grpo_step(pi, _sgd(pi), WORKED_GROUP, epsilon=0.2, beta=0.0, mu=0)
    with pytest.raises(ValueError, match="ref_logits"):
        grpo_step(pi, _sgd(pi), WORKED_GROUP, epsilon=0.2, beta=0.04, ref_logits=torch.zeros(4))


# --- training -------------------------------------------------------------------------------------

def test_fixed_group_training_prefers_3_keeps_1_avoids_2():
    h = train_toy(steps=12, G=3, lr=1.0, group="fixed")
    p = h["probs"]                                                         # (13, 3)
    assert p.shape == (13, 3) and h["logits"].shape == (13, 3) and h["groups"].shape == (12, 3)
    assert torch.allclose(p.sum(-1), torch.ones(13))
    dp = p[1:] - p[:-1]
    assert (dp[:, 2] > 0).all(), "p('2 + 3 = 5') must rise every step"
    assert (dp[:, 1] < 0).all(), "p('6') must fall every step"
    # "keep 1": A = 0 leaves the logit of "5" untouched; its probability still falls, because the mass moves
    # to "2 + 3 = 5" (softmax is relative).
    assert torch.equal(h["logits"][:, 0], torch.zeros(13))
    assert (dp[:, 0] < 0).all()
    # the same group each step: the logits move on a straight line, θ_t = t · lr · A / 3 (SGD, ρ = 1, β = 0)
    t = torch.arange(13.0)[:, None]
    A = torch.tensor([0.0, -FLOORED_ONE, FLOORED_ONE])
    assert torch.allclose(h["logits"], t * A / 3, atol=1e-5)
    assert torch.equal(h["reward_mean"], torch.ones(12))                    # the group mean is always 1
    assert torch.equal(h["loss"], torch.zeros(12))                          # ρ = 1 and ΣA = 0 every step


def test_sampled_training_converges_to_the_answer_with_working():
    h = train_toy(steps=60, G=8, lr=1.0, seed=0, group="sampled", beta=0.04)
    p = h["probs"]
    assert p.shape == (61, 3) and h["groups"].shape == (60, 8)
    assert p[-1, 2] > 0.95 and p[-1].argmax().item() == 2
    assert h["reward_mean"][-10:].mean() > 1.8                              # nearly every answer now scores 2
    assert (h["kl"] >= 0).all()


def test_train_toy_is_reproducible_per_seed():
    a = train_toy(steps=5, G=4, lr=0.5, seed=1, group="sampled")
    b = train_toy(steps=5, G=4, lr=0.5, seed=1, group="sampled")
    assert torch.equal(a["groups"], b["groups"]) and torch.equal(a["probs"], b["probs"])


def test_train_toy_refuses_bad_arguments():
    with pytest.raises(ValueError, match="group"):
        train_toy(group="random")
    with pytest.raises(ValueError, match="G must be 3"):
        train_toy(G=4, group="fixed")
    with pytest.raises(ValueError, match="steps"):
        train_toy(steps=-1)
    with pytest.raises(ValueError, match="lr"):
        train_toy(lr=0.0)
    h = train_toy(steps=0)
    assert h["probs"].shape == (1, 3) and h["groups"].shape == (0, 3)
