"""Checkers for the fill-in exercises of notebook 04: the masked per-sequence mean and the k3 KL estimator.

Exercise 4.1 asks for the paper's aggregation of per-token losses ℓ (B, T) with a mask m (B, T)
(`loss_type="grpo"`): loss = 1/B Σ_i (Σ_t m_{i,t} ℓ_{i,t}) / max(|o_i|, 1), |o_i| = Σ_t m_{i,t}. The checker
rejects averaging over padding (no mask), DAPO's token mean, dividing by T instead of |o_i|, and a 0 / 0 on an
empty completion. `seq_mean_loss` is the reference; tests/test_course_exercises_ex04.py checks that it agrees with
`grpo_loss(..., loss_type="grpo")`.

Exercise 4.2 asks for the k3 estimator e^d - d - 1, d = logp_ref - logp. The reference is `grpo_lib.loss.kl_k3`;
the checker rejects the swapped sign (d = logp - logp_ref), the plain log-ratio k1 (either sign) and k2 = d²/2.

Taught in: notebooks/04_the_loss.ipynb
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from grpo_lib.course.exercises.checking import (Case, CheckResult, Rejected, as_tensor, fmt, never_raises, report,
                                                run_cases)
from grpo_lib.course.exercises.checking import ERROR_HINT, read_tensor as _tensor_like
from grpo_lib.loss import clipped_surrogate, kl_k3, normalise_token_losses


def seq_mean_loss(per_token_loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """loss = 1/B Σ_i (Σ_t m_{i,t} ℓ_{i,t}) / max(|o_i|, 1): the paper's per-sequence mean (loss_type="grpo").

    Args:
        per_token_loss: ℓ, (B, T); values at padding positions are arbitrary and must not count.
        mask: m, (B, T), 0/1; |o_i| = m.sum(-1). A row with no token contributes 0 and still counts in 1/B.

    Returns:
        a 0-dim tensor.

    Used by: `check_seq_mean_loss` (exercise 4.1)
    """
    return normalise_token_losses(per_token_loss, mask, "grpo")              # 0-dim


def _seq_mean_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, ℓ (B, T), m (B, T) int32) in the order the checker tries them."""
    g = torch.Generator().manual_seed(4)
    lengths = torch.tensor([40, 120, 60])                                    # notebook 04's section 4.8 group
    mask_48 = (torch.arange(120)[None, :] < lengths[:, None]).int()          # (3, 120)
    loss_48 = -torch.tensor([0.0, -1.0, 1.0])[:, None].expand(3, 120).clone()  # (3, 120) ℓ = -A at ρ = 1
    B, T = 6, 7
    random_len = torch.randint(1, T + 1, (B,), generator=g)                  # (B,) every row has a token
    random_mask = (torch.arange(T)[None, :] < random_len[:, None]).int()     # (B, T)
    two_loss = torch.tensor([[1.0, 3.0, 5.0, 7.0], [1.0, 1.0, 1.0, 1.0]])    # (2, 4); 5 and 7 sit on padding
    two_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.int32)   # (2, 4)
    return [
        ("two completions of 2 and 4 tokens, padded to T = 4: ℓ = [[1, 3, 5, 7], [1, 1, 1, 1]], "
         "m = [[1, 1, 0, 0], [1, 1, 1, 1]]", two_loss, two_mask),
        ("section 4.8's group at the first step (lengths 40, 120, 60; ℓ = -A, A = [0, -1, +1])", loss_48, mask_48),
        ("a random batch of shape (6, 7) with padding", torch.randn(B, T, generator=g) * 3, random_mask),
        ("a batch whose second completion has no token at all: m = [[1, 1, 0], [0, 0, 0]]",
         torch.tensor([[2.0, 4.0, 9.0], [5.0, 5.0, 5.0]]), torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.int32)),
    ]


def _diagnose_seq_mean(loss: torch.Tensor, mask: torch.Tensor, got: float) -> str:
    m = mask.float()
    if math.isnan(got) or math.isinf(got):
        return ("a completion with no token has |o_i| = 0, and 0 / 0 is NaN: clamp the lengths at 1, "
                "mask.sum(-1).clamp(min=1), so it contributes 0 (and still counts in 1/B, as in TRL).")
    candidates = [
        (loss.mean(dim=-1).mean(), "you averaged over the padding too: multiply by the mask before summing, and "
                                   "divide each row by its own length |o_i| = mask.sum(-1), not by T."),
        (loss.mean(), "you averaged over the padding too: multiply by the mask, then divide each row by "
                      "|o_i| = mask.sum(-1)."),
        (normalise_token_losses(loss, m, "bnpo"), "that is the token mean Σ m ℓ / Σ m (DAPO / bnpo): every token "
                                                  "weighs the same. The paper first averages inside each "
                                                  "completion (÷ |o_i|), then over the B completions."),
        (((loss * m).sum(dim=-1) / loss.shape[-1]).mean(), "the mask is right but you divided each row by T (the "
                                                           "padded length); divide by |o_i| = mask.sum(-1)."),
        ((loss * m).sum(dim=-1).mean(), "you summed each completion's tokens but did not divide by its length "
                                        "|o_i| = mask.sum(-1)."),
        (((loss * m).sum(dim=-1) / m.sum(dim=-1).clamp(min=1)).sum(), "the last step is a mean over the B "
                                                                      "completions, not a sum."),
    ]
    for value, hint in candidates:
        if math.isclose(got, float(value), rel_tol=1e-4, abs_tol=1e-6):
            return hint
    return "loss = ((ℓ * m).sum(-1) / m.sum(-1).clamp(min=1)).mean(): a mean per completion, then over completions."


def _read_number(got: Any, case: Case) -> Any:
    value = as_tensor(got)
    if value is None:
        return Rejected(repr(got)[:80], "return a single number (a 0-dim tensor).")
    if value.numel() != 1:
        return Rejected(f"shape {tuple(value.shape)}: {fmt(value)[:80]}", "after the mean inside each completion, "
                        "also average over the B completions: .mean().", expected=f"one number, {case.expected:.4f}")
    return float(value.reshape(()))


@never_raises("4.1")
def check_seq_mean_loss(fn: Callable[[torch.Tensor, torch.Tensor], Any]) -> CheckResult:
    """Check fn(per_token_loss (B, T), mask (B, T)) -> the masked per-sequence mean, a single number.

    Reference: `seq_mean_loss`, the aggregation of `grpo_loss(..., loss_type="grpo")`.

    Used by: tests/test_course_exercises_ex04.py. Exercise 4.1 of the notebook is now `check_clipped_tokens` (issue 12);
    this checker stays for student copies made before.
    """
    cases = [Case(name, (loss, mask), float(seq_mean_loss(loss, mask))) for name, loss, mask in _seq_mean_cases()]
    return run_cases(
        fn, cases, exercise="4.1",
        blank_hint="multiply by the mask, sum each row, divide by that row's length mask.sum(-1), then take the "
                   "mean over the rows.",
        error_hint="take ℓ and m, both (B, T), and return one number.",
        read=_read_number, matches=lambda got, expected: math.isclose(got, expected, rel_tol=1e-4, abs_tol=1e-6),
        hint=lambda case, got: _diagnose_seq_mean(*case.args, got), show=lambda x: f"{x:.4f}",
        success=f"✓ Correct: your masked per-sequence mean matches grpo_loss(loss_type='grpo') on all {len(cases)} "
                "batches; padding does not count.")


def _kl_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, logp, logp_ref) in the order the checker tries them."""
    g = torch.Generator().manual_seed(4)
    p_theta = torch.tensor([0.1, 0.2, 0.3, 0.4])
    p_ref = torch.tensor([0.4, 0.4, 0.1, 0.1])
    return [
        ("one token with π_θ = 0.5, π_ref = 0.25",
         torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])),
        ("one token with π_θ = 0.2, π_ref = 0.4", torch.tensor([[math.log(0.2)]]), torch.tensor([[math.log(0.4)]])),
        ("a token where π_θ = π_ref = 0.3", torch.tensor([[math.log(0.3)]]), torch.tensor([[math.log(0.3)]])),
        ("section 4.4's 4-token vocabulary (shape (4,))", p_theta.log(), p_ref.log()),
        ("a random batch of shape (3, 5)", -torch.rand(3, 5, generator=g) * 4, -torch.rand(3, 5, generator=g) * 4),
    ]


def _diagnose_kl(logp: torch.Tensor, logp_ref: torch.Tensor, got: torch.Tensor) -> str:
    d = logp_ref - logp                                                       # the right d
    named = [
        (torch.expm1(-d) + d, "the sign of d is swapped: d = logp_ref - logp (log π_ref/π_θ), not logp - logp_ref. "
                              "With the sign swapped, e^(-d) + d - 1 is not an unbiased estimate of "
                              "KL(π_θ ‖ π_ref) for tokens sampled from π_θ."),
        (-d, "that is k1, the plain log-ratio log π_θ - log π_ref: unbiased, but negative on every token that "
             "π_θ finds less likely than π_ref. k3 adds e^d - 1 (mean 0) and is never negative: e^d - d - 1."),
        (d, "that is the log-ratio with the sign flipped (log π_ref - log π_θ); k3 is e^d - d - 1 with that d."),
        (0.5 * d * d, "that is k2 = d²/2 (biased); k3 is e^d - d - 1."),
        (torch.expm1(d) - d + 1, "you forgot the - 1: k3 = e^d - d - 1 is 0 where π_θ = π_ref (d = 0)."),
    ]
    for value, hint in named:
        if torch.allclose(got, value, atol=1e-4):
            return hint
    if (got < -1e-6).any():
        return "k3 is never negative: e^d ≥ 1 + d for every d. Compute d = logp_ref - logp, then e^d - d - 1."
    return "d = logp_ref - logp, then kl = torch.exp(d) - d - 1, token by token (same shape as logp)."


def _read_tensor(got: Any, case: Case) -> Any:
    value = as_tensor(got)
    if value is None:
        return Rejected(repr(got)[:80], "return a tensor of the same shape as logp.")
    if value.shape != case.expected.shape:
        return Rejected(f"shape {tuple(value.shape)}", "k3 is per token: no sum or mean, return the same shape as "
                        "logp.", expected=f"shape {tuple(case.expected.shape)}")
    return value


@never_raises("4.2")
def check_kl_k3(fn: Callable[[torch.Tensor, torch.Tensor], Any]) -> CheckResult:
    """Check fn(logp, logp_ref) -> k3 = e^d - d - 1, d = logp_ref - logp, token by token (same shape as logp).

    Reference: `grpo_lib.loss.kl_k3`.

    Used by: tests/test_course_exercises_ex04.py. Exercise 4.2 of the notebook is now `check_exact_kl` (issue 12);
    this checker stays for student copies made before.
    """
    cases = [Case(name, (logp, logp_ref), kl_k3(logp, logp_ref)) for name, logp, logp_ref in _kl_cases()]
    return run_cases(
        fn, cases, exercise="4.2",
        blank_hint="d = logp_ref - logp (mind the order), then e^d - d - 1.",
        error_hint="take logp and logp_ref (same shape) and return a tensor of that shape; use torch.exp, not "
                   "math.exp, on tensors.",
        read=_read_tensor, matches=lambda got, expected: torch.allclose(got, expected, atol=1e-5, rtol=1e-4),
        hint=lambda case, got: _diagnose_kl(*case.args, got), show=fmt,
        success=f"✓ Correct: your k3 matches grpo_lib.loss.kl_k3 on all {len(cases)} cases, and it is never negative.")

# --- issue 12: exercises that need the idea, with progressive hints (key_step) ---------------------------

CLIP_NUDGE = ("the clip is one-sided: it only stops tokens that already moved far enough *in the direction their "
              "advantage asks for*.")
CLIP_KEY = "((A > 0) & (rho > 1 + epsilon)) | ((A < 0) & (rho < 1 - epsilon)), with A[:, None] broadcast over tokens."


def clipped_tokens(rho: torch.Tensor, A: torch.Tensor, epsilon: float) -> torch.Tensor:
    """True where the clipped surrogate's gradient in ρ is zero because of the clip; ρ (B, T), A (B,) -> bool (B, T)."""
    A_t = A[:, None].expand_as(rho)
    return ((A_t > 0) & (rho > 1 + epsilon)) | ((A_t < 0) & (rho < 1 - epsilon))


def _clip_cases() -> list[Case]:
    g = torch.Generator().manual_seed(41)
    rho_r = torch.exp(torch.randn(6, 5, generator=g) * 0.4)
    rho_r = torch.where(((rho_r - 1).abs() - 0.2).abs() < 1e-3, rho_r + 0.01, rho_r)   # no ties at the edges
    raw = [("one completion with A = +1 and ratios [0.5, 0.9, 1.1, 1.5], ε = 0.2",
            torch.tensor([[0.5, 0.9, 1.1, 1.5]]), torch.tensor([1.0])),
           ("one completion with A = -1 and ratios [0.5, 0.9, 1.1, 1.5], ε = 0.2",
            torch.tensor([[0.5, 0.9, 1.1, 1.5]]), torch.tensor([-1.0])),
           ("A = [0, 2] and ratios [[0.5, 1.5], [0.5, 1.5]], ε = 0.2",
            torch.tensor([[0.5, 1.5], [0.5, 1.5]]), torch.tensor([0.0, 2.0])),
           ("a random batch of 6 completions × 5 tokens, ε = 0.2", rho_r, torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0]))]
    return [Case(name, (rho, A, 0.2), clipped_tokens(rho, A, 0.2)) for name, rho, A in raw]


def _bool_read(got: Any, case: Case) -> Any:
    value = got if isinstance(got, torch.Tensor) else as_tensor(got)
    if value is None or value.shape != case.expected.shape:
        return Rejected("something else" if value is None else f"shape {tuple(value.shape)}",
                        "one True/False per token, the shape of rho.", expected=f"shape {tuple(case.expected.shape)}")
    return value.bool()


def _clip_hint(case: Case, got: torch.Tensor) -> str:
    rho, A, eps = case.args
    outside = (rho < 1 - eps) | (rho > 1 + eps)
    if torch.equal(got, outside) or torch.equal(got, outside & (A[:, None] != 0)):
        return ("you flagged every ratio outside [1 - ε, 1 + ε]. Take a token with A > 0 whose ratio fell to 0.5: "
                "does the min(...) leave it flat, or does it still get pushed back up?")
    if torch.equal(got, ((A[:, None] < 0) & (rho > 1 + eps)) | ((A[:, None] > 0) & (rho < 1 - eps))):
        return "the sides are swapped: which way does a token with A > 0 want its ratio to move?"
    return "for each token ask: has its ratio already gone past the edge in the direction its advantage asks for?"


@never_raises("4.1")
def check_clipped_tokens(fn: Callable[[torch.Tensor, torch.Tensor, float], Any]) -> CheckResult:
    """Exercise 4.1: the tokens whose gradient the clip switches off (what the clip fraction counts)."""
    result = run_cases(fn, _clip_cases(), exercise="4.1", blank_hint=CLIP_NUDGE, key_step=CLIP_KEY,
                       error_hint=ERROR_HINT, read=_bool_read, matches=lambda got, exp: bool(torch.equal(got, exp)),
                       hint=_clip_hint, show=lambda t: fmt(t.float()),
                       success="✓ Correct: one-sided, exactly as the min(...) of the surrogate decides.")
    if not result:
        return result
    rho, A, eps = _clip_cases()[3].args
    rho = rho.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(clipped_surrogate(rho, A[:, None], eps).sum(), rho)
    return report(bool(torch.equal(grad == 0, clipped_tokens(rho.detach(), A, eps))),
                  "  Autograd agrees: those are exactly the tokens of the random batch with zero gradient.")


KL_NUDGE = ("at every position the model gives a whole distribution over the vocabulary; the exact KL is a sum "
            "over it, weighted by π_θ. Work with log_softmax over the last dimension.")
KL_KEY = "logp, logq = logits.log_softmax(-1), logits_ref.log_softmax(-1); return (logp.exp() * (logp - logq)).sum(-1)."


def exact_kl(logits: torch.Tensor, logits_ref: torch.Tensor) -> torch.Tensor:
    """KL(π_θ ‖ π_ref) at every position from full logits: (B, T, V), (B, T, V) -> (B, T)."""
    logp, logq = logits.log_softmax(-1), logits_ref.log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def _kl_hint(case: Case, got: torch.Tensor) -> str:
    logits, logits_ref = case.args
    logp, logq = logits.log_softmax(-1), logits_ref.log_softmax(-1)
    if torch.allclose(got, (logq.exp() * (logq - logp)).sum(-1), atol=1e-5):
        return "that is KL(π_ref ‖ π_θ): which distribution weights the sum in the KL the paper writes?"
    if torch.allclose(got, (logits.softmax(-1) * (logits - logits_ref)).sum(-1), atol=1e-5):
        return "logits are not log-probabilities: two logit vectors that differ by a constant are the same policy."
    return "at one position: a distribution over V tokens for π_θ and one for π_ref; sum over the tokens."


@never_raises("4.2")
def check_exact_kl(fn: Callable[[torch.Tensor, torch.Tensor], Any]) -> CheckResult:
    """Exercise 4.2: the exact per-position KL from full logits."""
    g = torch.Generator().manual_seed(42)
    same = torch.randn(1, 2, 3, generator=g)
    raw = [("one position, π_θ = [0.1, 0.2, 0.3, 0.4] and π_ref = [0.4, 0.4, 0.1, 0.1] as log-probs (1, 1, 4)",
            torch.tensor([[[0.1, 0.2, 0.3, 0.4]]]).log(), torch.tensor([[[0.4, 0.4, 0.1, 0.1]]]).log()),
           ("the same policy twice, its logits shifted by +5, shape (1, 2, 3)", same, same + 5.0),
           ("random logits of shape (2, 3, 7)", torch.randn(2, 3, 7, generator=g) * 2, torch.randn(2, 3, 7, generator=g))]
    cases = [Case(name, (a, b), exact_kl(a, b)) for name, a, b in raw]
    return run_cases(fn, cases, exercise="4.2", blank_hint=KL_NUDGE, key_step=KL_KEY, error_hint=ERROR_HINT,
                     read=_tensor_like, matches=lambda got, exp: bool(torch.allclose(got, exp, atol=1e-5)),
                     hint=_kl_hint, show=fmt,
                     success="✓ Correct: the exact KL at every position. It needs π_ref's whole (B, T, V) distribution, "
                             "which is why the training loop keeps one log-prob per token and uses k3.")
