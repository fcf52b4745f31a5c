"""grpo_lib.course.exercises.ex06 (exercises 6.1, 6.2 and the optional checked part of 6.4): the references agree with grpo_lib (the planner's AdamW line,
grpo_loss's "dapo" normalisation under DDP); each checker accepts the right answer (reference and an
independent one), rejects the plausible wrong answers with a specific message, reports the student placeholder
as "not yet", and never raises on garbage."""
import math

import pytest
import torch
from transformers import Qwen2Config

from grpo_lib.course.exercises.ex06 import (
    DAPO_CASES,
    adamw_moment_bytes,
    check_adamw_moment_bytes,
    check_dapo_normaliser,
    dapo_normaliser,
    ddp_loss_with,
)
from grpo_lib.loss import grpo_loss
from grpo_lib.course.memory import plan_gpu_memory, qwen2_parameter_count
from checker_helpers import passes as _passes, fails as _fails, placeholder as _placeholder


# --- 6.4 (optional) AdamW moments per GPU ---------------------------------------------------------------------------


def test_adamw_reference_is_the_planners_line():
    cfg = Qwen2Config(vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    P = qwen2_parameter_count(cfg)
    for K in (1, 2):
        plan = plan_gpu_memory(cfg, G=2, N=2, prompt_len=3, completion_len=5, world_size=K)   # mixed precision
        assert plan.row("policy", "AdamW m and v").bytes == adamw_moment_bytes(P, K) == 8 * P
    optimizer_state = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1000))])          # torch's own state
    optimizer_state.param_groups[0]["params"][0].grad = torch.ones(1000)
    optimizer_state.step()
    state = optimizer_state.state[optimizer_state.param_groups[0]["params"][0]]
    moments = [state["exp_avg"], state["exp_avg_sq"]]
    assert sum(t.numel() * t.element_size() for t in moments) == adamw_moment_bytes(1000)


def test_adamw_accepts_reference_and_independent_answers(capsys):
    out = _passes(check_adamw_moment_bytes(adamw_moment_bytes), capsys)
    assert "11.5 GiB per GPU" in out
    _passes(check_adamw_moment_bytes(lambda P, K: 2 * 4 * P), capsys)
    _passes(check_adamw_moment_bytes(lambda P, K: torch.tensor(8.0 * P, dtype=torch.float64)), capsys)


@pytest.mark.parametrize("wrong, hint", [
    (lambda P, K: 4 * P, "4 bytes per parameter is one fp32 moment"),                 # one moment
    (lambda P, K: 2 * 2 * P, "4 bytes per parameter is one fp32 moment (or two bf16 ones)"),  # bf16 moments
    (lambda P, K: 2 * P, "one moment in bf16"),
    (lambda P, K: 12 * P, "12 bytes adds the fp32 master weights"),
    (lambda P, K: 16 * P, "12 bytes adds the fp32 master weights, 16"),
    (lambda P, K: 8 * P / K, "plain DDP replicates the optimizer"),                    # ZeRO-1 thinking
    (lambda P, K: 8 * P / 2**30, "return bytes, not GiB"),
    (lambda P, K: 8 * P + 1, "2 moments × 4 bytes"),
])
def test_adamw_rejects_plausible_mistakes(wrong, hint, capsys):
    _fails(check_adamw_moment_bytes(wrong), capsys, hint, "expected")


def test_adamw_unfilled_and_garbage_never_raise(capsys):
    out = _fails(check_adamw_moment_bytes(_placeholder("6.4")), capsys, "Exercise 6.4 is not filled in yet", "Hint")
    assert "✗ Not yet: Exercise 6.4" in out
    _fails(check_adamw_moment_bytes(lambda P, K: None), capsys, "return one number of bytes")
    _fails(check_adamw_moment_bytes(lambda P, K: "8P"), capsys, "return one number of bytes")
    _fails(check_adamw_moment_bytes(lambda P, K: torch.ones(2) * 8 * P), capsys, "return one number")
    _fails(check_adamw_moment_bytes(lambda P, K: float("nan")), capsys, "return one number")

    def type_error(P, K):
        raise TypeError("unsupported operand")
    _fails(check_adamw_moment_bytes(type_error), capsys, "TypeError: unsupported operand")
    _fails(check_adamw_moment_bytes(lambda P: 8 * P), capsys, "TypeError")              # wrong signature
    _fails(check_adamw_moment_bytes(42), capsys)                                         # not even a function


# --- 6.1 the dapo normaliser under DDP --------------------------------------------------------------------


def test_dapo_reference_by_hand():
    names = [c[0] for c in DAPO_CASES]
    assert dapo_normaliser(DAPO_CASES[0][1], 0) == dapo_normaliser(DAPO_CASES[1][1], 1) == (5 + 8) / 2
    assert dapo_normaliser(DAPO_CASES[2][1], 2) == pytest.approx((4 + 8 + 5) / 3)
    assert dapo_normaliser(DAPO_CASES[3][1], 0) == 5 and len(names) == len(set(names))
    for _, masks, rank in DAPO_CASES:                       # a per-rank count would differ somewhere
        averaged, target = ddp_loss_with(masks, [dapo_normaliser(masks, r) for r in range(len(masks))])
        assert averaged == pytest.approx(target)            # DDP's average = the global token mean
    masks = DAPO_CASES[0][1]
    averaged, target = ddp_loss_with(masks, [m.sum().item() for m in masks])
    assert averaged != pytest.approx(target)                 # per-rank normalisation is biased


def test_dapo_reference_agrees_with_grpo_loss_under_ddp():
    """grpo_loss("dapo", global_num_tokens, world_size) on each rank, averaged as DDP averages gradients, equals
    the one-process loss on the concatenated batch; and each rank's loss is its token sum over dapo_normaliser."""
    g = torch.Generator().manual_seed(0)
    masks = DAPO_CASES[2][1]
    K = len(masks)
    n_global = sum(m.sum().item() for m in masks)
    per_rank, grads, data = [], [], []
    for rank, m in enumerate(masks):
        B, T = m.shape
        logp = torch.randn(B, T, generator=g).requires_grad_(True)
        A = torch.randn(B, generator=g)
        loss, _ = grpo_loss(logp, None, None, A, m, beta=0.0, loss_type="dapo", global_num_tokens=n_global,
                            world_size=K)
        assert loss.item() == pytest.approx((m * -A[:, None]).sum().item() / dapo_normaliser(masks, rank))
        loss.backward()
        per_rank.append(loss.item())
        grads.append(logp.grad / K)                           # DDP: the average over the K ranks
        data.append((logp.detach(), A, m))
    T_max = max(m.shape[1] for m in masks)                     # one process: pad everything to the longest T
    pad = lambda t: torch.nn.functional.pad(t, (0, T_max - t.shape[1]))  # noqa: E731
    logp_all = torch.cat([pad(d[0]) for d in data]).requires_grad_(True)
    A_all, m_all = torch.cat([d[1] for d in data]), torch.cat([pad(d[2]) for d in data])
    loss_all, _ = grpo_loss(logp_all, None, None, A_all, m_all, beta=0.0, loss_type="dapo")
    loss_all.backward()
    assert sum(per_rank) / K == pytest.approx(loss_all.item())
    start = 0
    for grad in grads:
        B, T = grad.shape
        assert torch.allclose(grad, logp_all.grad[start:start + B, :T], atol=1e-6)
        start += B


def test_dapo_accepts_reference_and_independent_answers(capsys):
    _passes(check_dapo_normaliser(lambda masks, rank: torch.stack([m.sum() for m in masks]).sum() / len(masks)),
            capsys)
    _passes(check_dapo_normaliser(lambda masks, rank: sum(int(m.sum()) for m in masks) / len(masks)), capsys)


@pytest.mark.parametrize("wrong, hint", [
    (lambda masks, rank: masks[rank].sum(), "this rank's own token count (per-rank normalisation)"),
    (lambda masks, rank: sum(m.sum() for m in masks), "comes out 2 times too small"),
    (lambda masks, rank: sum(m.numel() for m in masks) / len(masks), "count only active tokens"),
    (lambda masks, rank: masks[rank].numel(), "count only active tokens"),
    (lambda masks, rank: sum(m.shape[0] for m in masks) / len(masks), "counts completions (rows)"),
    (lambda masks, rank: masks[rank].sum() / len(masks), "They must agree"),
])
def test_dapo_rejects_plausible_mistakes(wrong, hint, capsys):
    out = _fails(check_dapo_normaliser(wrong), capsys, hint, "expected 6.5")
    if "per-rank" in hint:
        assert "global token mean" in out                   # the message shows what the bias does


def test_dapo_unfilled_and_garbage_never_raise(capsys):
    out = _fails(check_dapo_normaliser(_placeholder("6.1")), capsys, "Exercise 6.1 is not filled in yet", "Hint")
    assert out.startswith("✗ Not yet: Exercise 6.1")
    _fails(check_dapo_normaliser(lambda masks, rank: None), capsys, "return one number")
    _fails(check_dapo_normaliser(lambda masks, rank: [m.sum() for m in masks]), capsys, "return one number")
    _fails(check_dapo_normaliser(lambda masks, rank: torch.stack([m.sum() for m in masks])), capsys,
           "return one number")                                                       # wrong shape: one per rank

    def type_error(masks, rank):
        raise TypeError("'list' object has no attribute 'sum'")
    _fails(check_dapo_normaliser(type_error), capsys, "TypeError")
    _fails(check_dapo_normaliser(lambda masks: 1.0), capsys, "TypeError")              # wrong signature
    _fails(check_dapo_normaliser(lambda masks, rank: masks.sum()), capsys, "AttributeError")  # a list has no .sum
    assert not math.isnan(dapo_normaliser([torch.zeros(1, 3)], 0))                      # empty batch: clamped to 1
