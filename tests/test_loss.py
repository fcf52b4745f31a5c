"""Tests for grpo_lib.loss: hand-computed values, properties of k3 and of the clipped surrogate, the
REINFORCE limit, every loss_type against a straightforward loop implementation written here, and the
DDP arithmetic of loss_type="dapo"."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grpo_lib.advantages import group_advantages
from grpo_lib.loss import (LOSS_TYPES, clipped_surrogate, dapo_divisor, grpo_loss, kl_k3, micro_batch_weight,
                           normalise_token_losses)

LN2 = math.log(2.0)


# ---------------------------------------------------------------- a 2 x 3 example, by hand
#
# rho = exp(logp - logp_old) = [[1.0, 1.5, 0.5],      A = [+1, -1], epsilon = 0.2 -> clip to [0.8, 1.2]
#                               [1.0, 1.5, 0.5]]      mask = [[1, 1, 1], [1, 1, 0]]
# row 0 (A = +1): min(rho, clip(rho)) = [min(1, 1), min(1.5, 1.2), min(0.5, 0.8)] = [1, 1.2, 0.5]
# row 1 (A = -1): min(-rho, -clip(rho)) = [-1, min(-1.5, -1.2), min(-0.5, -0.8)] = [-1, -1.5, -0.8]
# beta = 0: per-token loss = -surrogate = [[-1, -1.2, -0.5], [1, 1.5, 0.8 (masked)]]
#   grpo:    row means -2.7/3 = -0.9 and 2.5/2 = 1.25 -> (-0.9 + 1.25)/2 = 0.175
#   bnpo:    (-2.7 + 2.5) / 5 tokens = -0.04          (dapo in one process: the same)
#   dr_grpo: -0.2 / (B * L_max) = -0.2 / (2 * 4) = -0.025
# clipped tokens: row 0 t=1 (rho 1.5 > 1.2, A > 0). Row 1 t=2 (rho 0.5 < 0.8, A < 0) is masked.
#   row 0 t=2 (rho 0.5, A > 0) and row 1 t=1 (rho 1.5, A < 0) are outside the range but the min keeps
#   the unclipped term there. -> clip_fraction = 1/5 = 0.2
# ratio_mean = (1 + 1.5 + 0.5 + 1 + 1.5) / 5 = 1.1
# KL: logp_ref - logp = [[ln 2, 0, 0], [0, 0, ln 2]] -> k3 = [[1 - ln 2, 0, 0], [0, 0, (masked)]]
#   kl stat = (1 - ln 2)/5 = 0.0613706; with beta = 0.1 row 0's mean becomes (-2.7 + 0.1(1 - ln 2))/3
#   = -0.8897715 and grpo = (-0.8897715 + 1.25)/2 = 0.1801142

def hand_batch():
    logp_old = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -1.0, -2.0]])
    rho = torch.tensor([[1.0, 1.5, 0.5], [1.0, 1.5, 0.5]])
    logp = logp_old + rho.log()
    logp_ref = logp + torch.tensor([[LN2, 0.0, 0.0], [0.0, 0.0, LN2]])
    A = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logp, logp_old, logp_ref, A, mask


@pytest.mark.parametrize("loss_type, expected", [
    ("grpo", 0.175), ("bnpo", -0.04), ("dr_grpo", -0.025), ("dapo", -0.04)])
def test_hand_values_beta0(loss_type, expected):
    logp, logp_old, logp_ref, A, mask = hand_batch()
    loss, stats = grpo_loss(logp, logp_old, logp_ref, A, mask, epsilon=0.2, beta=0.0,
                            loss_type=loss_type, max_completion_length=4)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(0.2, abs=1e-6)
    assert stats["clip_fraction_high"].item() == pytest.approx(0.2, abs=1e-6)
    assert stats["clip_fraction_low"].item() == 0.0
    assert stats["ratio_mean"].item() == pytest.approx(1.1, abs=1e-6)
    assert stats["kl"].item() == pytest.approx((1 - LN2) / 5, abs=1e-6)


def test_hand_value_with_kl():
    logp, logp_old, logp_ref, A, mask = hand_batch()
    loss, stats = grpo_loss(logp, logp_old, logp_ref, A, mask, epsilon=0.2, beta=0.1)
    assert loss.item() == pytest.approx(0.1801142, abs=1e-6)
    assert stats["kl"].item() == pytest.approx(0.0613706, abs=1e-6)


def test_stats_are_detached_scalars():
    logp, logp_old, logp_ref, A, mask = hand_batch()
    logp = logp.clone().requires_grad_(True)
    loss, stats = grpo_loss(logp, logp_old, logp_ref, A, mask)
    assert loss.ndim == 0 and loss.requires_grad
    assert {"kl", "clip_fraction", "ratio_mean"} <= set(stats)
    for v in stats.values():
        assert isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad


def test_first_step_values_from_the_anchors():
    # G = 3, A = [0, -1, 1], lengths [40, 120, 60], beta 0, rho = 1:
    # grpo: -mean(A) = 0; dapo: -(0*40 - 120 + 60)/220 = +0.2727; dr_grpo: 60/(3 * 400) = 0.05
    T = 120
    lengths = torch.tensor([40, 120, 60])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).int()
    logp = -torch.rand(3, T)
    A = torch.tensor([0.0, -1.0, 1.0])
    kw = dict(beta=0.0, max_completion_length=400)
    assert grpo_loss(logp, None, None, A, mask, loss_type="grpo", **kw)[0].item() == pytest.approx(0.0, abs=1e-7)
    assert grpo_loss(logp, None, None, A, mask, loss_type="dapo", **kw)[0].item() == pytest.approx(60 / 220)
    assert grpo_loss(logp, None, None, A, mask, loss_type="dr_grpo", **kw)[0].item() == pytest.approx(0.05)


# ---------------------------------------------------------------- k3

def test_k3_hand_values():
    logp = torch.zeros(3)
    logp_ref = torch.tensor([LN2, -LN2, 0.0])
    # d = ln 2: 2 - ln 2 - 1 = 0.3069;  d = -ln 2: 0.5 + ln 2 - 1 = 0.1931;  d = 0: 0
    torch.testing.assert_close(kl_k3(logp, logp_ref), torch.tensor([1 - LN2, LN2 - 0.5, 0.0]))


@settings(max_examples=100, deadline=None)
@given(st.floats(-20, 5), st.floats(-20, 5))
def test_k3_nonnegative_and_zero_only_where_equal(a, b):
    logp = torch.tensor([a], dtype=torch.float64)
    logp_ref = torch.tensor([b], dtype=torch.float64)
    k = kl_k3(logp, logp_ref).item()
    assert k >= 0
    if a == b:
        assert k == 0.0
    elif abs(a - b) > 1e-6:
        assert k > 0


def test_k3_expectation_is_the_exact_kl():
    # E_{x ~ pi_theta}[k3(x)] = KL(pi_theta || pi_ref) for a categorical distribution
    torch.manual_seed(0)
    logp = torch.log_softmax(torch.randn(10, dtype=torch.float64), 0)
    logp_ref = torch.log_softmax(torch.randn(10, dtype=torch.float64), 0)
    expected_kl = (logp.exp() * (logp - logp_ref)).sum()
    torch.testing.assert_close((logp.exp() * kl_k3(logp, logp_ref)).sum(), expected_kl)


# ---------------------------------------------------------------- clipped surrogate

def test_clipped_surrogate_hand_values_and_broadcast():
    rho = torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.0, 1.5]])
    A = torch.tensor([2.0, -1.0])                       # (B,) broadcast over T
    # row 0: min(2 rho, 2 clip(rho)) = [min(1, 1.6), 2, min(3, 2.4)] = [1, 2, 2.4]
    # row 1: min(-rho, -clip) = [min(-0.5, -0.8), -1, min(-1.5, -1.2)] = [-0.8, -1, -1.5]
    expected = torch.tensor([[1.0, 2.0, 2.4], [-0.8, -1.0, -1.5]])
    torch.testing.assert_close(clipped_surrogate(rho, A, 0.2), expected)
    torch.testing.assert_close(clipped_surrogate(rho, A[:, None].expand(2, 3), 0.2), expected)
    # epsilon_high = 0.6 lets rho = 1.5 through for A > 0 -> 3.0
    assert clipped_surrogate(rho, A, 0.2, epsilon_high=0.6)[0, 2].item() == pytest.approx(3.0)


def test_clipping_zeroes_the_gradient_in_the_direction_of_A():
    epsilon = 0.2
    logp_old = torch.zeros(4, 1)
    # rho = [1.5, 1.5, 0.5, 0.5] with A = [+1, -1, -1, +1]
    logp = torch.log(torch.tensor([[1.5], [1.5], [0.5], [0.5]])).requires_grad_(True)
    A = torch.tensor([1.0, -1.0, -1.0, 1.0])
    mask = torch.ones(4, 1)
    loss, stats = grpo_loss(logp, logp_old, None, A, mask, epsilon=epsilon, beta=0.0, loss_type="bnpo")
    (g,) = torch.autograd.grad(loss, logp)
    # rows 0 (rho > 1+eps, A > 0) and 2 (rho < 1-eps, A < 0) are clipped: no gradient
    assert g[0, 0].item() == 0.0 and g[2, 0].item() == 0.0
    # rows 1 and 3 keep the unclipped term: d(-rho A)/d logp / 4 tokens = -rho A / 4
    assert g[1, 0].item() == pytest.approx(1.5 / 4)
    assert g[3, 0].item() == pytest.approx(-0.5 / 4)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)
    assert stats["clip_fraction_high"].item() == pytest.approx(0.25)
    assert stats["clip_fraction_low"].item() == pytest.approx(0.25)


def test_epsilon_high_is_asymmetric():
    logp_old = torch.zeros(2, 1)
    logp = torch.log(torch.tensor([[1.25], [0.75]])).requires_grad_(True)
    A = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 1)
    # symmetric 0.2: both tokens are clipped (1.25 > 1.2 with A > 0; 0.75 < 0.8 with A < 0)
    _, stats = grpo_loss(logp, logp_old, None, A, mask, epsilon=0.2, beta=0.0)
    assert stats["clip_fraction"].item() == pytest.approx(1.0)
    # clip-higher 0.28: the upper bound moves to 1.28, so only the lower one is clipped
    loss, stats = grpo_loss(logp, logp_old, None, A, mask, epsilon=0.2, epsilon_high=0.28, beta=0.0)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)
    assert stats["clip_fraction_high"].item() == 0.0
    (g,) = torch.autograd.grad(loss, logp)
    assert g[0, 0].item() == pytest.approx(-1.25 / 2)   # grpo: -(rho A)/1 token, mean over 2 rows
    assert g[1, 0].item() == 0.0


# ---------------------------------------------------------------- the REINFORCE limit

def test_on_policy_beta0_equals_reinforce_with_group_mean_baseline():
    torch.manual_seed(0)
    N, G, T = 2, 3, 5
    r = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    A = group_advantages(r, scale="none").reshape(-1)               # (B,) r - group mean
    logp = (-torch.rand(N * G, T, dtype=torch.float64) * 3).requires_grad_(True)
    mask = (torch.arange(T)[None, :] < torch.tensor([5, 2, 4, 1, 3, 5])[:, None]).int()
    A = A.double()

    loss, stats = grpo_loss(logp, logp.detach(), None, A, mask, beta=0.0, loss_type="grpo")
    (g,) = torch.autograd.grad(loss, logp)
    m = mask.double()
    reinforce = -(A * (logp * m).sum(-1) / m.sum(-1)).mean()         # -(1/B) Σ_i A_i · mean_t log π
    (g_ref,) = torch.autograd.grad(reinforce, logp)

    # value: rho = 1, so the loss reads -mean(A) = 0 since A sums to 0 in each group...
    assert loss.item() == pytest.approx(-A.mean().item(), abs=1e-12)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    # ...but its gradient is REINFORCE's, and not zero
    torch.testing.assert_close(g, g_ref)
    assert g.abs().max() > 0.1
    assert stats["ratio_mean"].item() == pytest.approx(1.0) and stats["clip_fraction"].item() == 0.0
    # logp_old=None means the same thing
    loss2, _ = grpo_loss(logp, None, None, A, mask, beta=0.0)
    (g2,) = torch.autograd.grad(loss2, logp)
    torch.testing.assert_close(g2, g)


# ---------------------------------------------------------------- every loss_type vs. plain loops

def loop_loss(logp, logp_old, logp_ref, A, mask, epsilon, epsilon_high, beta, loss_type,
              max_completion_length=None, global_num_tokens=None, world_size=1):
    """Straightforward per-token loops: the formulas of grpo-anchors section (c) as written."""
    if epsilon_high is None:
        epsilon_high = epsilon
    B, T = logp.shape
    seq_means, total, n_active = [], torch.zeros((), dtype=logp.dtype), 0
    for i in range(B):
        seq_sum, n_i = torch.zeros((), dtype=logp.dtype), 0
        for t in range(T):
            if mask[i, t] == 0:
                continue
            rho = torch.exp(logp[i, t] - logp_old[i, t])
            unclipped = rho * A[i]
            clipped = torch.clamp(rho, 1 - epsilon, 1 + epsilon_high) * A[i]
            surrogate = unclipped if unclipped < clipped else clipped
            d = logp_ref[i, t] - logp[i, t]
            kl = torch.exp(d) - d - 1
            seq_sum = seq_sum + (-(surrogate - beta * kl))
            n_i += 1
        seq_means.append(seq_sum / max(n_i, 1))
        total = total + seq_sum
        n_active += n_i
    if loss_type == "grpo":
        return sum(seq_means) / B
    if loss_type == "bnpo":
        return total / max(n_active, 1)
    if loss_type == "dr_grpo":
        return total / (B * max_completion_length)
    if loss_type == "dapo":
        n = n_active if global_num_tokens is None else global_num_tokens
        return total / (max(n, 1) / world_size)
    raise AssertionError(loss_type)


def random_batch(seed, B=6, T=7):
    g = torch.Generator().manual_seed(seed)
    logp_old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 4
    logp = (logp_old + 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)).requires_grad_(True)
    logp_ref = logp_old + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    A = torch.randn(B, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, T, generator=g) < 0.7).int()
    mask[2] = 0                                                         # a fully masked completion
    return logp, logp_old, logp_ref, A, mask


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("epsilon, epsilon_high, beta", [(0.2, None, 0.04), (0.1, 0.28, 0.0), (0.2, 0.3, 0.5)])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_loss_type_matches_loops(loss_type, epsilon, epsilon_high, beta, seed):
    logp, logp_old, logp_ref, A, mask = random_batch(seed)
    kw = dict(epsilon=epsilon, epsilon_high=epsilon_high, beta=beta, loss_type=loss_type, max_completion_length=9)
    loss, stats = grpo_loss(logp, logp_old, logp_ref, A, mask, **kw)
    (g,) = torch.autograd.grad(loss, logp)
    expected = loop_loss(logp, logp_old, logp_ref, A, mask, epsilon, epsilon_high, beta, loss_type, 9)
    (g_expected,) = torch.autograd.grad(expected, logp)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(g, g_expected)
    assert (g[2] == 0).all()                                            # the fully masked row gets nothing
    assert stats["clip_fraction"].item() > 0                            # the random ratios do hit the clip
    # explicit DAPO arguments
    if loss_type == "dapo":
        loss, _ = grpo_loss(logp, logp_old, logp_ref, A, mask, **kw, global_num_tokens=50, world_size=3)
        expected = loop_loss(logp, logp_old, logp_ref, A, mask, epsilon, epsilon_high, beta, "dapo", None, 50, 3)
        torch.testing.assert_close(loss, expected)


def test_stats_match_loops():
    logp, logp_old, logp_ref, A, mask = random_batch(3)
    eps, eps_high = 0.1, 0.25
    _, stats = grpo_loss(logp, logp_old, logp_ref, A, mask, epsilon=eps, epsilon_high=eps_high)
    n, clipped, kl_sum, rho_sum = 0, 0, 0.0, 0.0
    for i in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            if mask[i, t]:
                rho = math.exp(logp[i, t].item() - logp_old[i, t].item())
                d = logp_ref[i, t].item() - logp[i, t].item()
                n += 1
                rho_sum += rho
                kl_sum += math.exp(d) - d - 1
                clipped += (rho < 1 - eps and A[i] < 0) or (rho > 1 + eps_high and A[i] > 0)
    assert stats["clip_fraction"].item() == pytest.approx(clipped / n)
    assert stats["ratio_mean"].item() == pytest.approx(rho_sum / n)
    assert stats["kl"].item() == pytest.approx(kl_sum / n)


# ---------------------------------------------------------------- DDP arithmetic of dapo

def policy_logp(W, X, tokens):
    """A tiny shared-parameter policy: logits = X W, log-probs of the given tokens. X (B, T, d), W (d, V)."""
    return torch.log_softmax(X @ W, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)   # (B, T)


def ddp_setup(seed=0, B=6, T=8, d=5, V=11):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, T, d, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, V, (B, T), generator=g)
    W = torch.randn(d, V, generator=g, dtype=torch.float64).requires_grad_(True)
    W_old = (W + 0.3 * torch.randn(d, V, generator=g, dtype=torch.float64)).detach()
    W_ref = (W + 0.3 * torch.randn(d, V, generator=g, dtype=torch.float64)).detach()
    A = torch.randn(B, generator=g, dtype=torch.float64)
    lengths = torch.tensor([8, 2, 3, 8, 7, 6])                          # halves hold 13 and 21 tokens
    mask = (torch.arange(T)[None, :] < lengths[:, None]).int()
    return X, tokens, W, W_old, W_ref, A, mask


def grad_of(W, X, tokens, W_old, W_ref, A, mask, rows, **kw):
    logp = policy_logp(W, X[rows], tokens[rows])
    logp_old = policy_logp(W_old, X[rows], tokens[rows])
    logp_ref = policy_logp(W_ref, X[rows], tokens[rows])
    loss, _ = grpo_loss(logp, logp_old, logp_ref, A[rows], mask[rows], epsilon=0.2, beta=0.04, **kw)
    (g,) = torch.autograd.grad(loss, W)
    return g


def test_dapo_two_ranks_averaged_equal_the_full_batch():
    X, tokens, W, W_old, W_ref, A, mask = ddp_setup()
    full, half1, half2 = slice(0, 6), slice(0, 3), slice(3, 6)
    n_global = int(mask.sum())                                          # 34 active tokens in all
    g_full = grad_of(W, X, tokens, W_old, W_ref, A, mask, full, loss_type="dapo")
    g1 = grad_of(W, X, tokens, W_old, W_ref, A, mask, half1, loss_type="dapo",
                 global_num_tokens=n_global, world_size=2)
    g2 = grad_of(W, X, tokens, W_old, W_ref, A, mask, half2, loss_type="dapo",
                 global_num_tokens=torch.tensor(n_global), world_size=2)
    torch.testing.assert_close((g1 + g2) / 2, g_full)                   # what DDP's all-reduce mean does

    # bnpo normalises by each rank's own token count (13 vs 21), so its average is NOT the full batch's
    b_full = grad_of(W, X, tokens, W_old, W_ref, A, mask, full, loss_type="bnpo")
    b1 = grad_of(W, X, tokens, W_old, W_ref, A, mask, half1, loss_type="bnpo")
    b2 = grad_of(W, X, tokens, W_old, W_ref, A, mask, half2, loss_type="bnpo")
    assert not torch.allclose((b1 + b2) / 2, b_full, atol=1e-6)

    # grpo (per-sequence mean, then mean over rows) splits exactly when the halves hold equal rows
    s_full = grad_of(W, X, tokens, W_old, W_ref, A, mask, full, loss_type="grpo")
    s1 = grad_of(W, X, tokens, W_old, W_ref, A, mask, half1, loss_type="grpo")
    s2 = grad_of(W, X, tokens, W_old, W_ref, A, mask, half2, loss_type="grpo")
    torch.testing.assert_close((s1 + s2) / 2, s_full)
    u1 = grad_of(W, X, tokens, W_old, W_ref, A, mask, slice(0, 2), loss_type="grpo")
    u2 = grad_of(W, X, tokens, W_old, W_ref, A, mask, slice(2, 6), loss_type="grpo")
    assert not torch.allclose((u1 + u2) / 2, s_full, atol=1e-6)


# ---------------------------------------------------------------- masks and NaN safety

def test_fully_masked_batch_gives_zero_not_nan():
    logp = (-torch.rand(3, 4)).requires_grad_(True)
    mask = torch.zeros(3, 4)
    A = torch.tensor([1.0, -1.0, 0.5])
    for loss_type in LOSS_TYPES:
        loss, stats = grpo_loss(logp, logp.detach() - 0.1, logp.detach() + 0.2, A, mask,
                                loss_type=loss_type, max_completion_length=4)
        assert loss.item() == 0.0
        (g,) = torch.autograd.grad(loss, logp)
        assert (g == 0).all()
        assert all(v.item() == 0.0 for v in stats.values())


def test_garbage_at_masked_positions_cannot_leak():
    logp, logp_old, logp_ref, A, mask = random_batch(5)
    clean_loss, _ = grpo_loss(logp, logp_old, logp_ref, A, mask)
    (clean_g,) = torch.autograd.grad(clean_loss, logp)
    keep = mask.bool()
    dirty = torch.where(keep, logp, torch.tensor(float("-inf"), dtype=logp.dtype))
    dirty_old = torch.where(keep, logp_old, torch.tensor(float("nan"), dtype=logp.dtype))
    dirty_ref = torch.where(keep, logp_ref, torch.tensor(float("inf"), dtype=logp.dtype))
    loss, stats = grpo_loss(dirty, dirty_old, dirty_ref, A, mask)
    (g,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(loss, clean_loss)
    torch.testing.assert_close(g, clean_g)
    assert all(torch.isfinite(v) for v in stats.values())


def test_bool_and_float_masks_give_the_same_loss():
    logp, logp_old, logp_ref, A, mask = random_batch(6)
    a, _ = grpo_loss(logp, logp_old, logp_ref, A, mask)
    b, _ = grpo_loss(logp, logp_old, logp_ref, A, mask.bool())
    c, _ = grpo_loss(logp, logp_old, logp_ref, A, mask.double())
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


# ---------------------------------------------------------------- bad input

def test_bad_input_messages():
    logp, logp_old, logp_ref, A, mask = hand_batch()
    with pytest.raises(ValueError, match="mask shape"):
        grpo_loss(logp, logp_old, logp_ref, A, mask[:, :2])
    with pytest.raises(ValueError, match=r"advantages must have shape \(B,\)"):
        grpo_loss(logp, logp_old, logp_ref, A[:, None], mask)
    with pytest.raises(ValueError, match=r"advantages must have shape \(B,\)"):
        grpo_loss(logp, logp_old, logp_ref, torch.zeros(3), mask)
    with pytest.raises(ValueError, match="'grpo', 'bnpo', 'dr_grpo', 'dapo'"):
        grpo_loss(logp, logp_old, logp_ref, A, mask, loss_type="token_mean")
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(logp, logp_old, logp_ref, A, mask, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="logp_ref"):
        grpo_loss(logp, logp_old, None, A, mask, beta=0.04)
    with pytest.raises(ValueError, match="logp_old shape"):
        grpo_loss(logp, logp_old[:1], logp_ref, A, mask)
    with pytest.raises(ValueError, match="only 0 and 1"):
        grpo_loss(logp, logp_old, logp_ref, A, mask * 2)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        grpo_loss(logp[0], logp_old[0], logp_ref[0], A, mask[0])
    with pytest.raises(ValueError, match="world_size"):
        grpo_loss(logp, logp_old, logp_ref, A, mask, loss_type="dapo", world_size=0)
    # beta = 0 without a reference is fine, and the KL stat then reads 0
    loss, stats = grpo_loss(logp, logp_old, None, A, mask, beta=0.0)
    assert stats["kl"].item() == 0.0 and loss.item() == pytest.approx(0.175, abs=1e-6)


def test_half_precision_log_probs_are_upcast():
    logp, logp_old, logp_ref, A, mask = random_batch(7)
    half = [t.detach().to(torch.bfloat16) for t in (logp, logp_old, logp_ref)]
    logp_bf16 = half[0].clone().requires_grad_(True)
    loss, _ = grpo_loss(logp_bf16, half[1], half[2], A.float(), mask)
    assert loss.dtype == torch.float32
    expected, _ = grpo_loss(half[0].float(), half[1].float(), half[2].float(), A.float(), mask)
    torch.testing.assert_close(loss, expected)
    (g,) = torch.autograd.grad(loss, logp_bf16)
    assert g.dtype == torch.bfloat16 and torch.isfinite(g.float()).all()


# --- the normalisations, defined once (normalise_token_losses, micro_batch_weight, dapo_divisor) ---------------
def _by_hand(loss_type, ell, m, L=None, n_global=None, K=1):
    """Each normalisation written out with Python floats, row by row."""
    rows = [[(a, b) for a, b in zip(r, mr)] for r, mr in zip(ell.tolist(), m.tolist())]
    total = sum(a * b for r in rows for a, b in r)
    if loss_type == "grpo":
        return sum(sum(a * b for a, b in r) / max(1, sum(b for _, b in r)) for r in rows) / len(rows)
    if loss_type == "bnpo":
        return total / max(1, sum(b for r in rows for _, b in r))
    if loss_type == "dr_grpo":
        return total / (len(rows) * L)
    return total / (max(1, n_global) / K)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_normalise_token_losses_by_hand(loss_type):
    ell = torch.tensor([[1.0, 3.0, 5.0, 7.0], [2.0, 2.0, 2.0, 2.0], [4.0, 9.0, 9.0, 9.0]])
    m = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    got = normalise_token_losses(ell, m, loss_type, max_completion_length=4, global_num_tokens=10, world_size=2)
    assert got.item() == pytest.approx(_by_hand(loss_type, ell, m, L=4, n_global=10, K=2))
    assert got.item() == pytest.approx({"grpo": (2.0 + 2.0 + 0.0) / 3, "bnpo": 12 / 6, "dr_grpo": 12 / 12,
                                        "dapo": 12 / 5}[loss_type])


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_micro_batch_weights_add_up_to_the_whole_batch(loss_type):
    """Σ_k weight_k · normalise(micro-batch k) == normalise(whole batch), for every split and loss_type."""
    g = torch.Generator().manual_seed(5)
    ell = torch.randn(7, 5, generator=g)
    m = (torch.rand(7, 5, generator=g) > 0.4).int()
    m[3] = 0                                                          # a completion with no token
    kw = dict(max_completion_length=5, global_num_tokens=int(m.sum()), world_size=1)
    whole = normalise_token_losses(ell, m, loss_type, **kw)
    for b in (1, 2, 3, 7):
        parts = 0.0
        for s in range(0, 7, b):
            rows = slice(s, s + b)
            w = micro_batch_weight(loss_type, rows=ell[rows].shape[0], tokens=int(m[rows].sum()), batch_rows=7,
                                   batch_tokens=int(m.sum()))
            parts += w * normalise_token_losses(ell[rows], m[rows], loss_type, **kw).item()
        assert parts == pytest.approx(whole.item(), rel=1e-6, abs=1e-7), b


def test_dapo_divisor_and_unknown_loss_type():
    assert dapo_divisor(torch.tensor(13.0), 2).item() == 6.5
    assert dapo_divisor(torch.tensor(0.0), 4).item() == 0.25              # clamped at one token
    with pytest.raises(ValueError, match="loss_type must be one of"):
        normalise_token_losses(torch.ones(1, 1), torch.ones(1, 1), "mean")
    with pytest.raises(ValueError, match="loss_type must be one of"):
        micro_batch_weight("mean", rows=1, tokens=1, batch_rows=1, batch_tokens=1)


# --- non-finite inputs at active positions are refused, naming the input and the first position -------------
def _finite_batch():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.5, -2.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    return logp, logp - 0.1, logp + 0.2, torch.tensor([0.5, -0.5]), mask


@pytest.mark.parametrize("name, index, value, message", [
    ("logp", (0, 1), math.nan, "logp holds 1 non-finite value(s) at active positions (mask 1), the first nan at row 0, token 1"),
    ("logp", (1, 0), -math.inf, "logp holds 1 non-finite value(s) at active positions (mask 1), the first -inf at row 1, token 0"),
    ("logp_old", (0, 0), math.inf, "logp_old holds 1 non-finite value(s) at active positions (mask 1), the first inf at row 0, token 0"),
    ("logp_ref", (1, 0), math.nan, "logp_ref holds 1 non-finite value(s) at active positions (mask 1), the first nan at row 1, token 0"),
    ("advantages", (1,), math.inf, "advantages holds 1 non-finite value(s) at active positions (mask 1), the first inf at row 1"),
])
def test_grpo_loss_refuses_non_finite_inputs_at_active_positions(name, index, value, message):
    logp, logp_old, logp_ref, A, mask = _finite_batch()
    inputs = {"logp": logp, "logp_old": logp_old, "logp_ref": logp_ref, "advantages": A}
    inputs[name] = inputs[name].clone()
    inputs[name][index] = value
    with pytest.raises(ValueError) as err:
        grpo_loss(inputs["logp"], inputs["logp_old"], inputs["logp_ref"], inputs["advantages"], mask, beta=0.04)
    assert str(err.value).startswith(message)


def test_grpo_loss_ignores_non_finite_values_at_padded_positions():
    logp, logp_old, logp_ref, A, mask = _finite_batch()
    clean, _ = grpo_loss(logp, logp_old, logp_ref, A, mask, beta=0.04)
    padded = [t.clone() for t in (logp, logp_old, logp_ref)]
    for t, v in zip(padded, (-math.inf, math.nan, math.inf)):
        t[0, 2] = v                                                  # mask 0 there: padding may hold anything
        t[1, 1:] = v
    loss, _ = grpo_loss(*padded, A, mask, beta=0.04)
    assert torch.isfinite(loss) and loss.item() == clean.item()
    A2 = torch.tensor([0.5, math.nan])
    loss, _ = grpo_loss(logp, logp_old, logp_ref, A2, torch.tensor([[1, 1, 0], [0, 0, 0]]), beta=0.04)
    assert torch.isfinite(loss)                                      # row 1 has no active token: its A is unused


@pytest.mark.parametrize("kw, message", [
    (dict(beta=math.nan), "beta must be a finite number, got nan"),
    (dict(beta=math.inf), "beta must be a finite number, got inf"),
    (dict(epsilon=math.nan), "epsilon must be a finite number, got nan"),
    (dict(epsilon_high=math.inf), "epsilon_high must be a finite number, got inf"),
])
def test_grpo_loss_refuses_non_finite_coefficients(kw, message):
    logp, logp_old, logp_ref, A, mask = _finite_batch()
    with pytest.raises(ValueError) as err:
        grpo_loss(logp, logp_old, logp_ref, A, mask, **{"beta": 0.04, **kw})
    assert str(err.value) == message


# --- what grpo_loss refuses: counts and budgets that are not finite positive, log-ratios past the bound ----------
@pytest.mark.parametrize("n", [math.nan, math.inf, 0, -5, 3, torch.tensor(math.nan)])
def test_global_num_tokens_must_be_a_finite_count_at_least_the_batch_own(n):
    logp, logp_old, logp_ref, A, mask = random_batch(0)
    local = int(mask.sum())
    assert local > 3
    with pytest.raises(ValueError, match=rf"global_num_tokens must be a finite count .* at least this batch's own {local}"):
        grpo_loss(logp, logp_old, logp_ref, A, mask, loss_type="dapo", global_num_tokens=n, world_size=1)
    loss, _ = grpo_loss(logp, logp_old, logp_ref, A, mask, loss_type="dapo", global_num_tokens=local, world_size=1)
    bnpo, _ = grpo_loss(logp, logp_old, logp_ref, A, mask, loss_type="bnpo")
    torch.testing.assert_close(loss, bnpo)                          # one process, its own count: "bnpo"


@pytest.mark.parametrize("L", [math.nan, math.inf, 0, -3.0, True])
def test_max_completion_length_must_be_finite_and_positive(L):
    logp, logp_old, logp_ref, A, mask = random_batch(0)
    for loss_type in ("grpo", "dr_grpo"):                   # refused whenever it is given
        with pytest.raises(ValueError, match="max_completion_length"):
            grpo_loss(logp, logp_old, logp_ref, A, mask, loss_type=loss_type, max_completion_length=L)
    with pytest.raises(ValueError, match="max_completion_length must be a finite number > 0"):
        grpo_loss(logp, logp_old, logp_ref, A, mask, loss_type="grpo", max_completion_length=L)


def test_log_ratios_past_the_overflow_bound_are_refused_and_below_it_stay_finite():
    from grpo_lib.loss import LOG_RATIO_LIMIT

    assert LOG_RATIO_LIMIT == 80.0 and math.isfinite(torch.tensor(LOG_RATIO_LIMIT).exp().item())
    mask = torch.ones(2, 1, dtype=torch.int64)
    A = torch.tensor([-1.0, 1.0])
    for d, ok in ((100.0, False), (LOG_RATIO_LIMIT, True), (-100.0, True)):
        logp = torch.tensor([[d], [0.0]], requires_grad=True)
        zero = torch.zeros(2, 1)
        if ok:     # at the bound: ρ = e^80 with A = -1 picks the unclipped ρ·A: finite loss and gradient
            loss, _ = grpo_loss(logp, zero, None, A, mask, beta=0.0)
            (g,) = torch.autograd.grad(loss, logp)
            assert torch.isfinite(loss) and torch.isfinite(g).all()
        else:      # the reported case: a finite log-ratio of 100 gave an inf loss and gradient
            with pytest.raises(ValueError, match=r"log π_θ - log π_θold \(log ρ\) is 100 at row 0, token 0 \(1 active "
                                                 r"position\(s\) above 80\): exp of it overflows float32"):
                grpo_loss(logp, zero, None, A, mask, beta=0.0)
    # k3 = e^d - d - 1 with d = log π_ref - log π_θ: d = 100 overflowed to inf; d = -100 is finite (99)
    logp = torch.zeros(2, 1, requires_grad=True)
    with pytest.raises(ValueError, match=r"log π_ref - log π_θ \(the k3 exponent\) is 100"):
        grpo_loss(logp, None, torch.tensor([[100.0], [0.0]]), A, mask, beta=0.04)
    _, stats = grpo_loss(logp, None, torch.tensor([[-100.0], [0.0]]), A, mask, beta=0.04)
    assert stats["kl"].item() == pytest.approx(99.0 / 2)
    assert grpo_loss(torch.zeros(2, 1), torch.tensor([[1e9], [0.0]]), None, A, torch.tensor([[0], [1]]), beta=0.0)[0] \
        .isfinite()                                                 # padding (mask 0) may hold anything


# ---------------------------------------------------------------- the post-R1 options, by hand (choices 8-12)
# hand_batch: ρ = [[1, 1.5, 0.5], [1, 1.5, 0.5]], mask [[1, 1, 1], [1, 1, 0]], d = log π_ref - log π_θ =
# [[ln 2, 0, 0], [0, 0, (masked)]].

def test_gspo_sequence_ratio_by_hand():
    """s_0 = exp((0 + ln 1.5 + ln 0.5)/3) = 0.75^(1/3) = 0.9085603, s_1 = exp((0 + ln 1.5)/2) = 1.5^(1/2) = 1.2247449.
    ε = 0.2, A = [+1, -1]: neither clipped (s_0 inside [0.8, 1.2]; s_1 > 1.2 but A < 0 keeps the unclipped term).
    grpo: (-s_0 + s_1) / 2 = 0.1580923. ∂/∂log π_{i,t} = -A_i s_i / |o_i| / B: row 0 -s_0/6 = -0.1514267 on each
    token, row 1 +s_1/4 = 0.3061862 on its 2 active tokens."""
    logp, logp_old, _, A, mask = hand_batch()
    logp = logp.clone().requires_grad_(True)
    loss, stats = grpo_loss(logp, logp_old, None, A, mask, epsilon=0.2, beta=0.0, importance_sampling_level="sequence")
    assert loss.item() == pytest.approx(0.1580923, abs=1e-6)
    (g,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(g, torch.tensor([[-0.1514267] * 3, [0.3061862, 0.3061862, 0.0]]), atol=1e-6, rtol=0)
    assert stats["clip_fraction"].item() == 0
    assert stats["ratio_mean"].item() == pytest.approx((0.9085603 + 1.2247449) / 2, abs=1e-6)   # over completions


def test_gspo_clips_whole_sequences_by_hand():
    """A = [-1, +1], ε = 0.05: s_0 = 0.909 < 0.95 with A < 0 and s_1 = 1.225 > 1.05 with A > 0: both clipped.
    Per-token losses +0.95 and -1.05, grpo (0.95 - 1.05)/2 = -0.05, and no gradient at all."""
    logp, logp_old, _, _, mask = hand_batch()
    logp = logp.clone().requires_grad_(True)
    loss, stats = grpo_loss(logp, logp_old, None, torch.tensor([-1.0, 1.0]), mask, epsilon=0.05, beta=0.0,
                            importance_sampling_level="sequence")
    assert loss.item() == pytest.approx(-0.05, abs=1e-6)
    (g,) = torch.autograd.grad(loss, logp)
    assert (g == 0).all()
    assert stats["clip_fraction_low"].item() == 0.5 and stats["clip_fraction_high"].item() == 0.5


def test_cispo_by_hand():
    """ε_max = 1.2: w = sg(min(ρ, 1.2)) = [[1, 1.2, 0.5], [1, 1.2, 0.5]]; ℓ = -w·A·log π_θ, summed over the 5 active
    tokens / 5. Σ w A log π = (-1 + 1.2(-2 + ln 1.5) + 0.5(-0.5 + ln 0.5)) - (-1.5 + 1.2(-1 + ln 1.5)) = -1.2965741,
    loss 0.2593148. The gradient is -w·A / 5 on every active token, clipped or not: [[-0.2, -0.24, -0.1], [0.2, 0.24, 0]].
    clip_fraction = ρ > 1.2 with A > 0 = 1 token of 5."""
    logp, logp_old, _, A, mask = hand_batch()
    logp = logp.clone().requires_grad_(True)
    loss, stats = grpo_loss(logp, logp_old, None, A, mask, epsilon_high=1.2, beta=0.0, loss_type="cispo")
    assert loss.item() == pytest.approx(0.2593148, abs=1e-6)
    (g,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(g, torch.tensor([[-0.2, -0.24, -0.1], [0.2, 0.24, 0.0]]), atol=1e-6, rtol=0)
    assert stats["clip_fraction"].item() == pytest.approx(0.2) and stats["clip_fraction_low"].item() == 0
    with pytest.raises(ValueError, match="cispo.*epsilon_high"):
        grpo_loss(logp, logp_old, None, A, mask, epsilon_high=0.28, beta=0.0, loss_type="cispo")


@pytest.mark.parametrize("estimator, stat, grad_t0", [
    ("k1", -LN2 / 5, 1 / 6),             # k1 = log π - log π_ref: ∂ = +1
    ("k2", LN2 ** 2 / 2 / 5, -LN2 / 6),  # k2 = d²/2: ∂ = -d
    ("k3", (1 - LN2) / 5, -1 / 6),       # k3 = e^d - d - 1: ∂ = 1 - e^d = -1 at d = ln 2
])
def test_kl_estimators_by_hand(estimator, stat, grad_t0):
    """A = 0 and β = 1: the loss is the KL term alone. Only row 0, token 0 has d = ln 2 != 0 (row 1's is masked);
    grpo's 1/(|o_0| B) = 1/6 scales its gradient. k1's gradient is 1/6 on every token of row 0 and 1/4 on row 1's."""
    logp, _, logp_ref, _, mask = hand_batch()
    logp = logp.clone().requires_grad_(True)
    loss, stats = grpo_loss(logp, None, logp_ref, torch.zeros(2), mask, beta=1.0, kl_estimator=estimator)
    assert stats["kl"].item() == pytest.approx(stat, abs=1e-6)
    (g,) = torch.autograd.grad(loss, logp)
    assert g[0, 0].item() == pytest.approx(grad_t0, abs=1e-6)
    if estimator == "k1":
        torch.testing.assert_close(g, torch.tensor([[1 / 6] * 3, [0.25, 0.25, 0.0]]))
    else:
        assert (g[0, 1:] == 0).all() and (g[1] == 0).all()


def test_bias_corrected_k3_on_policy_has_the_reverse_kl_gradient():
    """On-policy (ρ = 1 in value): ρ·k3 = k3 in value, but ∂(ρ·k3)/∂log π = k3 + 1 - e^d = -d, k2's gradient
    (the reverse-KL one), not k3's 1 - e^d."""
    logp, _, logp_ref, _, mask = hand_batch()
    grads, stats = {}, {}
    for name, kw in (("k3", {}), ("rho_k3", {"use_bias_correction_kl": True}), ("k2", {"kl_estimator": "k2"})):
        lp = logp.clone().requires_grad_(True)
        loss, st = grpo_loss(lp, None, logp_ref, torch.zeros(2), mask, beta=1.0, **kw)
        grads[name], stats[name] = torch.autograd.grad(loss, lp)[0], st["kl"].item()
    assert stats["rho_k3"] == pytest.approx(stats["k3"], abs=1e-7)
    torch.testing.assert_close(grads["rho_k3"], grads["k2"])
    assert grads["rho_k3"][0, 0].item() == pytest.approx(-LN2 / 6, abs=1e-6) != grads["k3"][0, 0].item()


def test_bias_corrected_kl_off_policy_by_hand():
    """Off-policy, ρ_0 = [1, 1.5, 0.5]: only token 0 has k3 != 0 and its ρ is 1, so the stat stays (1 - ln 2)/5;
    row 1's d is masked. With ρ = 2 on that token (log π_old lowered by ln 2) it doubles."""
    logp, logp_old, logp_ref, _, mask = hand_batch()
    _, st = grpo_loss(logp, logp_old, logp_ref, torch.zeros(2), mask, beta=1.0, use_bias_correction_kl=True)
    assert st["kl"].item() == pytest.approx((1 - LN2) / 5, abs=1e-6)
    logp_old2 = logp_old.clone()
    logp_old2[0, 0] = logp[0, 0] - LN2
    _, st = grpo_loss(logp, logp_old2, logp_ref, torch.zeros(2), mask, beta=1.0, use_bias_correction_kl=True)
    assert st["kl"].item() == pytest.approx(2 * (1 - LN2) / 5, abs=1e-6)


def test_log_ratio_bound_applies_to_k3_only():
    """d = 100 at an active token: k3's e^100 overflows float32, so it is refused; k1 and k2 take no exp (k2 = 5000)."""
    # what the bound prevents: e^100 is inf in float32, so k3, the loss and its gradient (1 - e^d) would be inf;
    # e^80 is still finite
    assert torch.isinf(kl_k3(torch.zeros(1), torch.full((1,), 100.0))).all()
    assert torch.isfinite(kl_k3(torch.zeros(1), torch.full((1,), 80.0))).all()
    logp, _, logp_ref, A, mask = hand_batch()
    logp_ref = logp_ref.clone()
    logp_ref[0, 1] = logp[0, 1] + 100.0
    with pytest.raises(ValueError, match="k3 exponent"):
        grpo_loss(logp, None, logp_ref, A, mask, beta=0.04)
    _, st = grpo_loss(logp, None, logp_ref, A, mask, beta=0.04, kl_estimator="k2")
    assert st["kl"].item() == pytest.approx((LN2 ** 2 / 2 + 5000) / 5, rel=1e-6)
    # and log ρ above the bound is still refused at sequence level (s_i's log is a mean of token log-ratios)
    logp_old = logp.detach().clone()
    logp_old[1, 0] -= 81.0
    with pytest.raises(ValueError, match="log ρ"):
        grpo_loss(logp, logp_old, None, A, mask, beta=0.0, importance_sampling_level="sequence")


# δ = log π_train - log π_sampler = [[ln 2, 0, -ln 2], [ln 4, 0, (masked)]]
def _is_batch():
    lt = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0]])
    ls = lt - torch.tensor([[LN2, 0.0, -LN2], [2 * LN2, 0.0, 5.0]])
    return lt, ls, torch.tensor([[1, 1, 1], [1, 1, 0]])


@pytest.mark.parametrize("mode, expected", [
    ("token_truncate", [[2.0, 1.0, 0.5], [3.0, 1.0]]),     # 4 clamped to C_max = 3
    ("token_mask", [[2.0, 1.0, 0.5], [0.0, 1.0]]),         # 4 > 3 set to 0
    ("sequence_truncate", [[1.0], [3.0]]),                 # e^(ln2 + 0 - ln2) = 1, e^(ln 4) = 4 -> 3
    ("sequence_mask", [[1.0], [0.0]]),
])
def test_sampling_importance_weights_by_hand(mode, expected):
    from grpo_lib.loss import sampling_importance_weights

    lt, ls, mask = _is_batch()
    w, metrics = sampling_importance_weights(lt, ls, mask, mode=mode, clip_max=3.0)
    if mode.startswith("token"):
        torch.testing.assert_close(w[0], torch.tensor(expected[0]))
        torch.testing.assert_close(w[1, :2], torch.tensor(expected[1]))
    else:
        torch.testing.assert_close(w, torch.tensor(expected))
    assert metrics["sampling/sampling_logp_difference/mean"] == pytest.approx(4 * LN2 / 5, abs=1e-6)
    assert metrics["sampling/sampling_logp_difference/max"] == pytest.approx(2 * LN2, abs=1e-6)


def test_is_weights_scale_the_policy_term_not_the_kl():
    """w = 0 on row 1 removes its policy gradient; the KL gradient (k1: +1/(|o| B) per token) stays."""
    logp, logp_old, logp_ref, A, mask = hand_batch()
    lp = logp.clone().requires_grad_(True)
    w = torch.tensor([[1.0], [0.0]])
    loss, _ = grpo_loss(lp, None, logp_ref, A, mask, beta=1.0, kl_estimator="k1", is_weights=w)
    (g,) = torch.autograd.grad(loss, lp)
    torch.testing.assert_close(g[1], torch.tensor([0.25, 0.25, 0.0]))          # the KL term alone
    torch.testing.assert_close(g[0], torch.tensor([-1 / 6 + 1 / 6] * 3))        # -A/(|o| B) + 1/(|o| B) = 0
    with pytest.raises(ValueError, match="is_weights"):
        grpo_loss(lp, None, None, A, mask, beta=0.0, is_weights=torch.ones(2, 2))


@pytest.mark.parametrize("kw, match", [
    (dict(mode="bad"), "vllm_importance_sampling_mode"),
    (dict(mode="token_mask", clip_min=3.0, clip_max=2.0), "must be less than"),
    (dict(mode="sequence_truncate", clip_min=0.1, clip_max=None), "inf"),
])
def test_sampling_importance_weights_refuses(kw, match):
    from grpo_lib.loss import sampling_importance_weights

    lt, ls, mask = _is_batch()
    ls = ls.clone()
    ls[0, :] -= 40.0                                    # Σ δ = 120 on row 0: e^120 overflows float32
    with pytest.raises(ValueError, match=match):
        sampling_importance_weights(lt, ls, mask, **kw)


def test_new_options_off_by_default_change_nothing():
    """The defaults (token level, k3, no bias correction, no weights) give today's loss bit for bit."""
    logp, logp_old, logp_ref, A, mask = hand_batch()
    a, sa = grpo_loss(logp, logp_old, logp_ref, A, mask, beta=0.1)
    b, sb = grpo_loss(logp, logp_old, logp_ref, A, mask, beta=0.1, importance_sampling_level="token",
                      kl_estimator="k3", use_bias_correction_kl=False, is_weights=None)
    assert a.item() == b.item() == pytest.approx(0.1801142, abs=1e-6)
    assert all(sa[k].item() == sb[k].item() for k in sa)
