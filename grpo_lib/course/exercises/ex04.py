"""Checkers for the fill-in exercises of notebook 04: the tokens the clip silences (4.1) and the exact KL (4.2).

Exercise 4.1 asks which tokens get no gradient from the clipped surrogate because of the clip, for ratios ρ (B, T)
and advantages A (B,); `check_clipped_tokens` compares with `clipped_tokens` and with autograd. Exercise 4.2 asks
for the loss's KL term with the exact KL in place of k3: KL(π_θ ‖ π_ref) at every position from the full logits
(B, T, V), masked and averaged per completion as loss_type 'grpo' does; `check_exact_kl` compares with
`exact_kl_term`.

Taught in: notebooks/04_the_loss.ipynb
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from grpo_lib.course.exercises.checking import (Case, CheckResult, Rejected, as_tensor, fmt, never_raises, report,
                                                run_cases)
from grpo_lib.course.exercises.checking import ERROR_HINT, read_tensor as _tensor_like
from grpo_lib.loss import clipped_surrogate


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


KL_NUDGE = ("two steps: at one position, what does π_θ's whole distribution over the vocabulary give that a single "
            "sampled token's k3 only estimates? Then, over a batch: which positions belong to a completion, and how "
            "does the loss (loss_type 'grpo') average a per-token quantity?")
KL_KEY = ("kl = (logp.exp() * (logp - logq)).sum(-1) with logp, logq = logits.log_softmax(-1), "
          "logits_ref.log_softmax(-1); then ((kl * mask).sum(-1) / mask.sum(-1)).mean().")


def exact_kl(logits: torch.Tensor, logits_ref: torch.Tensor) -> torch.Tensor:
    """KL(π_θ ‖ π_ref) at every position from full logits: (B, T, V), (B, T, V) -> (B, T)."""
    logp, logq = logits.log_softmax(-1), logits_ref.log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def exact_kl_term(logits: torch.Tensor, logits_ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The KL term of loss_type 'grpo' (what β multiplies) with the exact KL in place of k3: a 0-dim tensor.

    (1/B) Σ_i (1/|o_i|) Σ_t m_{i,t} KL_t, KL_t = Σ_v π_θ(v) (log π_θ(v) − log π_ref(v)) from the full logits.
    """
    kl = exact_kl(logits, logits_ref)                                      # (B, T)
    return ((kl * mask).sum(-1) / mask.sum(-1)).mean()


def _kl_hint(case: Case, got: torch.Tensor) -> str:
    logits, logits_ref, mask = case.args
    logp, logq = logits.log_softmax(-1), logits_ref.log_softmax(-1)
    per_seq = lambda kl: ((kl * mask).sum(-1) / mask.sum(-1)).mean()       # noqa: E731
    close = lambda x: bool(torch.allclose(got, x, atol=1e-5))               # noqa: E731
    kl = exact_kl(logits, logits_ref)
    if close(per_seq((logq.exp() * (logq - logp)).sum(-1))):
        return "that is KL(π_ref ‖ π_θ): which distribution weights the sum in the KL the paper writes?"
    if close(per_seq((logits.softmax(-1) * (logits - logits_ref)).sum(-1))):
        return "logits are not log-probabilities: two logit vectors that differ by a constant are the same policy."
    if close(kl.mean()) or close((kl.sum(-1) / mask.sum(-1)).mean()):
        return "the positions after a completion's end are padding: their logits are not the model's choice."
    if close((kl * mask).sum() / mask.sum()):
        return "that is the token mean over the whole batch (loss_type 'dapo'); 'grpo' averages per completion first."
    if close((kl * mask).sum(-1).mean()):
        return "each completion's sum is divided by its own length |o_i| before the mean over completions."
    return "at one position: a distribution over V tokens for π_θ and one for π_ref; then average as the loss does."


def _scalar(got: Any, case: Case) -> Any:
    value = as_tensor(got)
    if value is None or value.numel() != 1:
        return Rejected("something else" if value is None else f"shape {tuple(value.shape)}",
                        "return one number for the batch (a 0-dim tensor or a float).", expected="one number")
    return value.reshape(())


@never_raises("4.2")
def check_exact_kl(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any]) -> CheckResult:
    """Exercise 4.2: the loss's KL term with the exact KL from full logits, masked and averaged per completion."""
    g = torch.Generator().manual_seed(42)
    same = torch.randn(1, 2, 3, generator=g)
    pad = torch.randn(2, 3, 5, generator=g)
    pad_ref = pad.clone()
    pad_ref[0, 2] += torch.tensor([9.0, -9.0, 0.0, 4.0, -4.0])            # wild logits on a padding position only
    raw = [("one position, π_θ = [0.1, 0.2, 0.3, 0.4] and π_ref = [0.4, 0.4, 0.1, 0.1] as log-probs (1, 1, 4), "
            "mask [[1]]", torch.tensor([[[0.1, 0.2, 0.3, 0.4]]]).log(), torch.tensor([[[0.4, 0.4, 0.1, 0.1]]]).log(),
            torch.ones(1, 1)),
           ("the same policy twice, its logits shifted by +5, shape (1, 2, 3), mask [[1, 1]]", same, same + 5.0,
            torch.ones(1, 2)),
           ("two completions of 2 and 3 tokens, π_θ = π_ref except at the first one's padding position, (2, 3, 5)",
            pad, pad_ref, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])),
           ("random logits of shape (2, 4, 7), completions of 4 and 1 tokens",
            torch.randn(2, 4, 7, generator=g) * 2, torch.randn(2, 4, 7, generator=g),
            torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]]))]
    cases = [Case(name, (a, b, m), exact_kl_term(a, b, m)) for name, a, b, m in raw]
    return run_cases(fn, cases, exercise="4.2", blank_hint=KL_NUDGE, key_step=KL_KEY, error_hint=ERROR_HINT,
                     read=_scalar, matches=lambda got, exp: bool(torch.allclose(got, exp, atol=1e-5)),
                     hint=_kl_hint, show=fmt, references=(exact_kl, exact_kl_term),
                     success="✓ Correct: the KL term with the exact KL, averaged as loss_type 'grpo' averages. It "
                             "needs π_ref's whole (B, T, V) distribution, which is why the training loop keeps one "
                             "log-prob per token and uses k3.")
