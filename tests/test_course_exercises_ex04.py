"""grpo_lib.course.exercises.ex04 (exercises 4.1 and 4.2): the reference aggregation agrees with grpo_loss; each checker accepts
the right answer (library and independent), rejects a missing mask, DAPO's token mean, the swapped KL sign and k1
with a specific message, reports the student placeholder as "not yet", and never raises."""
import math

import pytest
import torch

from grpo_lib.course.exercises.ex04 import _seq_mean_cases, check_kl_k3, check_seq_mean_loss, seq_mean_loss
from grpo_lib.loss import clipped_surrogate, grpo_loss, kl_k3
from checker_helpers import passes as _passes, fails as _fails, placeholder as _placeholder


# --- 4.1 the masked per-sequence mean ---------------------------------------------------------------


def test_seq_mean_loss_by_hand():
    loss = torch.tensor([[1.0, 3.0, 5.0, 7.0], [1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert seq_mean_loss(loss, mask).item() == pytest.approx((2.0 + 1.0) / 2)           # (1+3)/2 and 4/4
    empty = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert seq_mean_loss(torch.tensor([[2.0, 4.0, 9.0], [5.0, 5.0, 5.0]]), empty).item() == pytest.approx(1.5)


def test_seq_mean_loss_agrees_with_grpo_loss():
    """The reference equals grpo_loss(loss_type="grpo") with ε-clipping and β·k3 in the per-token loss."""
    g = torch.Generator().manual_seed(0)
    B, T, epsilon, beta = 5, 9, 0.2, 0.04
    logp = -torch.rand(B, T, generator=g) * 3
    logp_old = logp + 0.3 * torch.randn(B, T, generator=g)
    logp_ref = logp + 0.3 * torch.randn(B, T, generator=g)
    A = torch.randn(B, generator=g)
    mask = (torch.arange(T)[None, :] < torch.tensor([9, 3, 1, 6, 0])[:, None]).int()   # one empty row
    per_token = -(clipped_surrogate((logp - logp_old).exp(), A[:, None], epsilon) - beta * kl_k3(logp, logp_ref))
    library, _ = grpo_loss(logp, logp_old, logp_ref, A, mask, epsilon=epsilon, beta=beta, loss_type="grpo")
    assert seq_mean_loss(per_token, mask).item() == pytest.approx(library.item(), abs=1e-6)


def independent_seq_mean(loss, mask):
    total = 0.0
    for row, m in zip(loss.tolist(), mask.tolist()):
        n = sum(m)
        total += sum(v for v, keep in zip(row, m) if keep) / max(n, 1)
    return total / len(mask)


def test_seq_mean_checker_accepts(capsys):
    _passes(check_seq_mean_loss(seq_mean_loss), capsys)
    _passes(check_seq_mean_loss(independent_seq_mean), capsys)                           # a float is fine
    _passes(check_seq_mean_loss(lambda l, m: grpo_loss(-l, None, None, torch.zeros(len(l)), m, beta=0.0)[0] * 0
                                + seq_mean_loss(l, m)), capsys)


def test_seq_mean_checker_rejects_averaging_over_padding(capsys):
    out = _fails(check_seq_mean_loss(lambda l, m: l.mean(dim=-1).mean()), capsys,
                 "two completions of 2 and 4 tokens", "averaged over the padding")
    assert "expected 1.5000, got 2.5000" in out
    _fails(check_seq_mean_loss(lambda l, m: l.mean()), capsys, "averaged over the padding")


@pytest.mark.parametrize("wrong, parts", [
    (lambda l, m: (l * m).sum() / m.sum(), ("token mean", "DAPO")),
    (lambda l, m: ((l * m).sum(-1) / l.shape[-1]).mean(), ("divided each row by T",)),
    (lambda l, m: (l * m).sum(-1).mean(), ("did not divide by its length",)),
    (lambda l, m: ((l * m).sum(-1) / m.sum(-1)).sum(), ("not a sum",)),
    (lambda l, m: (l * m).sum(-1) / m.sum(-1), ("average over the B completions",)),          # (B,) not a number
    (lambda l, m: ((l * m).sum(-1) / m.sum(-1)).mean(), ("no token at all", "clamp")),         # 0 / 0 = NaN
    (lambda l, m: "loss", ("single number",)),
    (lambda l, m: None, ("single number",)),
    (lambda l: l, ("TypeError",)),
])
def test_seq_mean_checker_rejects_plausible_mistakes(wrong, parts, capsys):
    _fails(check_seq_mean_loss(wrong), capsys, *parts)


def test_seq_mean_checker_first_case_separates_every_named_mistake():
    name, loss, mask = _seq_mean_cases()[0]
    m = mask.float()
    right = seq_mean_loss(loss, mask).item()
    wrong = [loss.mean(-1).mean().item(),        # = loss.mean(): every row has T entries
             ((loss * m).sum() / m.sum()).item(),
             ((loss * m).sum(-1) / 4).mean().item()]
    assert all(not math.isclose(w, right) for w in wrong) and len(set(wrong)) == len(wrong)


def test_seq_mean_checker_not_yet_and_garbage(capsys):
    _fails(check_seq_mean_loss(_placeholder("4.1")), capsys, "Exercise 4.1 is not filled in yet", "Hint:")
    for garbage in (None, 3, lambda *a: torch.ones(7, 7)):
        assert not check_seq_mean_loss(garbage)
    capsys.readouterr()


# --- 4.2 the k3 KL estimator ------------------------------------------------------------------------


def test_kl_checker_accepts(capsys):
    _passes(check_kl_k3(kl_k3), capsys)
    _passes(check_kl_k3(lambda logp, ref: torch.exp(ref - logp) - (ref - logp) - 1), capsys)
    _passes(check_kl_k3(lambda logp, ref: (ref - logp).exp() - ref + logp - 1), capsys)


def test_kl_checker_rejects_swapped_sign(capsys):
    out = _fails(check_kl_k3(lambda logp, ref: torch.exp(logp - ref) - (logp - ref) - 1), capsys,
                 "π_θ = 0.5, π_ref = 0.25", "sign of d is swapped")
    assert "expected [[0.1931]], got [[0.3069]]" in out                          # 0.5 + ln 2 - 1 vs 2 - ln 2 - 1


@pytest.mark.parametrize("wrong, parts", [
    (lambda logp, ref: logp - ref, ("k1", "negative")),
    (lambda logp, ref: ref - logp, ("sign flipped",)),
    (lambda logp, ref: 0.5 * (ref - logp) ** 2, ("k2",)),
    (lambda logp, ref: (torch.exp(ref - logp) - (ref - logp) - 1).sum(), ("shape",)),
    (lambda logp, ref: torch.exp(ref - logp) - (ref - logp), ("forgot the - 1",)),   # still >= 0, but not 0 at d = 0
    (lambda logp, ref: torch.exp(ref - logp) - (ref - logp) - 1.5, ("never negative",)),
    (lambda logp, ref: math.exp(ref - logp), ("shape",)),       # math.exp: a float for a 1-element tensor
    (lambda logp, ref: "kl", ("same shape",)),
])
def test_kl_checker_rejects_plausible_mistakes(wrong, parts, capsys):
    _fails(check_kl_k3(wrong), capsys, *parts)


def test_kl_checker_not_yet_and_garbage(capsys):
    _fails(check_kl_k3(_placeholder("4.2")), capsys, "Exercise 4.2 is not filled in yet", "Hint:")
    for garbage in (None, "kl_k3", lambda a, b: [[float("nan")]]):
        assert not check_kl_k3(garbage)
    capsys.readouterr()
