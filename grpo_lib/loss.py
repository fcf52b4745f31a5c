"""GRPO surrogate loss: the GRPO objective of Shao et al. (2024), DeepSeekMath, eq. 3, negated.

    J(θ) = 1/G Σ_i 1/|o_i| Σ_t [ min(ρ_{i,t} A_i, clip(ρ_{i,t}, 1-ε, 1+ε) A_i) - β D_KL[π_θ ‖ π_ref] ]
    ρ_{i,t} = π_θ(o_{i,t} | q, o_{i,<t}) / π_θold(o_{i,t} | q, o_{i,<t})

The loss is -J, computed per token from log-probabilities and then aggregated over the batch.

Choices made here (1-7 shown in notebooks/04_the_loss.ipynb; 8-8 tested in tests/test_loss.py; 9-12 tested in
tests/test_loss.py and, against TRL's own code, tests/test_golden_trl_post_r1.py):
1. The KL to π_ref uses the k3 estimator of the paper, e^d - d - 1 with d = logp_ref - logp (Schulman's
   "k3"; unbiased, always >= 0, 0 only where the two log-probs agree). It is computed as expm1(d) - d,
   the same number without the cancellation of e^d - 1 for small d. The KL is added to the loss, not to
   the reward.
2. The clip range may be asymmetric, [1 - ε, 1 + ε_high] (DAPO's "clip-higher"); ε_high defaults to ε,
   which is the paper.
3. Aggregation is a named option, `loss_type` (the four normalisations of TRL, formulas in
   `grpo_loss`). The default "grpo" is the paper's eq. 3: mean over each completion's tokens, then over
   completions. TRL's current default is "dapo" (token-level); β = 0.04 is the paper's and the tutorial's
   value, TRL's current default is 0.
4. Denominators are clamped at 1, so a fully masked completion contributes 0 (and still counts in the
   1/B of "grpo", as in TRL), and a fully masked batch gives loss 0, never NaN. Masked positions are
   zero-filled before any arithmetic, so whatever sits there (even inf or NaN) cannot leak into the loss
   or its gradient.
5. With μ = 1 (one update per sampled batch) logp_old = logp.detach(), so ρ = 1 in value and clipping is
   inactive: the gradient is exactly REINFORCE with the group-mean baseline, -1/B Σ_i A_i ∇ (1/|o_i|)
   Σ_t log π_θ(o_{i,t}), and the loss value at β = 0 is -mean(A) = 0 when the batch holds whole groups.
6. Stats (kl, clip_fraction, ratio_mean) are token means over all active tokens of the batch whatever
   the loss_type (TRL's `masked_batch_mean`), detached, so they can be logged under the same names.
7. bf16/fp16 log-probs are upcast to fp32 before exp and the sums: the (B, T) tensors are small, and
   half precision would round ρ to steps of 0.008 (bf16) near 1, coarser than typical updates.
8. The documented overflow bound, checked rather than clamped: at an active position, log ρ and the k3
   exponent d = log π_ref - log π_θ must be at most `LOG_RATIO_LIMIT` = 80 (e^88.7 overflows float32,
   which would make the loss and its gradient inf); a larger one is refused, naming the position. No
   clamp changes the loss or its gradient anywhere below the bound. `global_num_tokens` ("dapo") must be
   a finite count at least this batch's own active tokens, `max_completion_length` a finite number > 0.
   The bound is what keeps e^(log ρ) (the ratio, GSPO's sequence ratio, whose log is a mean of token
   log-ratios and so never larger than their maximum) and k3's e^d finite; k1 and k2 take no exp, so with
   them the k3 exponent is not checked.
9. GSPO (Zheng et al. 2025), `importance_sampling_level="sequence"` (`sequence_log_ratio`) (TRL's name; TRL 1.16 has "token" and
   "sequence" only, so "sequence_token" is not offered): one ratio per completion, s_i = exp(mean_t log
   ρ_{i,t}) over its active tokens, clipped with the same ε / ε_high (GSPO's paper uses 3e-4 / 4e-4, so
   set them). Only with loss_type "grpo", the per-sequence objective: TRL only warns for the token-summing
   types, the config refuses them.
10. CISPO (MiniMax-M1), loss_type "cispo" in `grpo_loss`, TRL's form: ℓ_{i,t} = -sg(min(ρ, ε_max))·A_i·log π_θ,
   ε_max being `epsilon_high` itself (a cap on the weight, not 1 + ε_high; ScaleRL uses 5.0), normalised like
   "dapo" (token sum / global token count). Every token keeps the gradient A·∇log π_θ, scaled by the
   capped weight; the loss *value* is TRL's (it holds log π_θ, not ρ). The config refuses ε_max < 1 (a cap
   below 1 shrinks on-policy tokens; TRL takes any, and its epsilon_high default ε = 0.2 would cap there).
11. The KL estimator is an option (`kl_estimate`), `kl_estimator` "k3" (default, the paper), "k2" = d²/2 or
   "k1" = -d (d = log π_ref - log π_θ), and `use_bias_correction_kl` (TRL's name; DeepSeek-V3.2) multiplies it by
   the ratio ρ (with its gradient; GSPO's s_i at sequence level). Default False, today's engine and
   DeepSeekMath eq. 3; TRL 1.16 defaults to True. The "kl" stat is the term β multiplies.
12. Sampler-trainer mismatch weights (`sampling_importance_weights`, TRL's
   `vllm_importance_sampling_mode`): w from the trainer's and the sampler's log-probs of the sampled tokens,
   per token or per sequence (exp of the summed difference), truncated to [C_min, C_max] or set to 0
   outside it; `grpo_loss(is_weights=w)` multiplies the policy term (not the KL) by w, as TRL does.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
"""the four normalisations of the clipped objective (choice 3)"""
ALL_LOSS_TYPES = (*LOSS_TYPES, "cispo")
"""what `grpo_loss` and the config's loss_type accept: the four, and CISPO (choice 10)"""
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
"""TRL 1.16's importance_sampling_level values: per-token ρ (GRPO) or GSPO's length-normalised sequence ratio"""
KL_ESTIMATORS = ("k1", "k2", "k3")
IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")
"""TRL's vllm_importance_sampling_mode values (`sampling_importance_weights`)"""
LOG_RATIO_LIMIT = 80.0
"""the largest log-ratio `grpo_loss` accepts at an active position (choice 8): log ρ = log π_θ - log π_θold and the
k3 exponent log π_ref - log π_θ. e^80 = 5.5e34 stays finite in float32 (max 3.4e38, e^88.7), and so does ρ·A for
|A| up to 6,000; log-ratios below -80 are fine (e^d -> 0)."""


def kl_k3(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """Per-token KL estimate k3 = e^d - d - 1, d = logp_ref - logp (DeepSeekMath's D_KL).

    Equals π_ref/π_θ - log(π_ref/π_θ) - 1 per token; always >= 0, and 0 exactly where logp == logp_ref.
    Its expectation under π_θ is KL(π_θ ‖ π_ref).

    Args:
        logp: log π_θ per token, (B, T).
        logp_ref: log π_ref for the same tokens, (B, T).

    Returns:
        kl, (B, T).

    Taught in: notebooks/04_the_loss.ipynb
    """
    d = logp_ref - logp                                             # (B, T)
    return torch.expm1(d) - d                                       # (B, T) = e^d - 1 - d, accurate for small d


def kl_estimate(logp: Tensor, logp_ref: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token KL estimate of KL(π_θ ‖ π_ref) from samples of π_θ, d = logp_ref - logp:
    "k1" = -d (unbiased, can be negative), "k2" = d²/2 (biased, >= 0), "k3" = e^d - d - 1 (`kl_k3`).

    As a differentiated loss on-policy: E[∇k1] = 0, ∇k2 gives the reverse-KL gradient, ∇k3 the forward-KL one.

    Used by: `grpo_loss` (kl_estimator)
    """
    if estimator == "k3":
        return kl_k3(logp, logp_ref)
    d = logp_ref - logp                                             # (B, T)
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k1":
        return -d
    raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


def sequence_log_ratio(log_ratio: Tensor, mask: Tensor) -> Tensor:
    """GSPO's log s_i = mean over the active tokens of log ρ_{i,t}, (B, T) -> (B, 1) (0 for an empty row).

    Used by: `grpo_loss` (importance_sampling_level="sequence")
    """
    m = mask.to(log_ratio.dtype)
    return ((log_ratio * m).sum(-1) / m.sum(-1).clamp(min=1.0)).unsqueeze(-1)


def sampling_importance_weights(logp_trainer: Tensor, logp_sampler: Tensor, mask: Tensor, *,
                                mode: str = "sequence_mask", clip_min: float | None = None,
                                clip_max: float | None = 3.0) -> tuple[Tensor, dict[str, float]]:
    """Weights that correct for a sampler whose log-probs differ from the trainer's (TRL's vLLM IS correction).

    δ_{i,t} = (log π_train - log π_sampler) at active tokens (0 elsewhere, and where the sampler gave NaN).
    "token_*": w_{i,t} = e^δ_{i,t}, (B, T); "sequence_*": w_i = e^(Σ_t δ_{i,t}), (B, 1) (the product of the
    token ratios, not GSPO's mean). "*_truncate" clamps w to [clip_min, clip_max] (TIS); "*_mask" sets w to
    0 outside it (MIS / IcePop). A missing bound is no bound.

    Args:
        logp_trainer: log π_train(θ_old) of the sampled tokens, (B, T) (TRL: old_per_token_logps).
        logp_sampler: log π_sampler of the same tokens, (B, T) (TRL: sampling_per_token_logps).
        mask: (B, T) 0/1.
        mode, clip_min, clip_max: TRL's vllm_importance_sampling_mode / _clip_min / _clip_max.

    Returns:
        w (detached, (B, T) or (B, 1), for `grpo_loss(is_weights=w)`) and the metrics under TRL's names:
        "sampling/sampling_logp_difference/mean" and "/max" (|δ| over the active tokens), and
        "sampling/importance_sampling_ratio/min", "/mean", "/max" (w over the active tokens, or over the rows).

    Raises:
        ValueError: an unknown mode, clip_min >= clip_max, a truncate mode without any bound (TRL's checks), or
            a weight that is inf at an active position (a truncate mode without clip_max and a sum of
            differences above `LOG_RATIO_LIMIT`).
    """
    if mode not in IS_MODES:
        raise ValueError(f"vllm_importance_sampling_mode must be one of {IS_MODES}, got {mode!r}")
    if clip_min is not None and clip_max is not None and clip_min >= clip_max:
        raise ValueError(f"vllm_importance_sampling_clip_min ({clip_min}) must be less than "
                         f"vllm_importance_sampling_clip_max ({clip_max})")
    if mode.endswith("_truncate") and clip_min is None and clip_max is None:
        raise ValueError("at least one of vllm_importance_sampling_clip_min / _clip_max must be set for the "
                         f"truncate mode {mode!r}")
    if logp_trainer.shape != logp_sampler.shape or tuple(mask.shape) != tuple(logp_trainer.shape):
        raise ValueError(f"logp_trainer {tuple(logp_trainer.shape)}, logp_sampler {tuple(logp_sampler.shape)} and "
                         f"mask {tuple(mask.shape)} must have the same (B, T) shape")
    keep = mask != 0
    with torch.no_grad():
        lt, ls = logp_trainer.detach().float(), logp_sampler.detach().float()
        diff = torch.nan_to_num((lt - ls).masked_fill(~keep, 0.0), nan=0.0)     # (B, T)
        sequence = mode.startswith("sequence")
        w = torch.exp(diff.sum(-1, keepdim=True) if sequence else diff)        # (B, 1) or (B, T)
        lo = -math.inf if clip_min is None else clip_min
        hi = math.inf if clip_max is None else clip_max
        if mode.endswith("_truncate"):
            w = w.clamp(min=clip_min, max=clip_max)
        else:
            w = w.masked_fill((w < lo) | (w > hi), 0.0)
        active = keep.any(-1, keepdim=True) if sequence else keep
        if not torch.isfinite(w[active.expand_as(w)]).all():
            raise ValueError(f"an importance weight is inf in mode {mode!r} (clip_max={clip_max}): the summed "
                             "log-prob difference overflows exp; set vllm_importance_sampling_clip_max")
        delta = (lt - ls).abs()[keep & ~torch.isnan(lt - ls)]
        flat = w.flatten() if sequence else w[keep]
        zero = lambda f, x: float(f(x)) if x.numel() else 0.0                   # noqa: E731
        metrics = {
            "sampling/sampling_logp_difference/mean": zero(torch.mean, delta),
            "sampling/sampling_logp_difference/max": zero(torch.max, delta),
            "sampling/importance_sampling_ratio/min": zero(torch.min, flat),
            "sampling/importance_sampling_ratio/mean": zero(torch.mean, flat),
            "sampling/importance_sampling_ratio/max": zero(torch.max, flat),
        }
    return w, metrics


def clipped_surrogate(rho: Tensor, A: Tensor, epsilon: float, epsilon_high: float | None = None) -> Tensor:
    """PPO's clipped surrogate min(ρ·A, clip(ρ, 1-ε, 1+ε_high)·A), per token.

    Where ρ has left [1-ε, 1+ε_high] in the direction that A rewards (ρ > 1+ε_high with A > 0, or
    ρ < 1-ε with A < 0) the clipped term wins and is constant in θ: that token gets no gradient.

    Args:
        rho: importance ratio ρ = π_θ / π_θold, (B, T).
        A: advantage, (B,) (one per completion, broadcast over its tokens) or (B, T).
        epsilon: ε, lower clip range (ρ >= 1 - ε).
        epsilon_high: ε_high, upper clip range (ρ <= 1 + ε_high); None means ε.

    Returns:
        surrogate, (B, T).

    Taught in: notebooks/04_the_loss.ipynb
    """
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    if A.ndim == rho.ndim - 1:
        A = A.unsqueeze(-1)                                         # (B,) -> (B, 1): same A_i for every t
    return torch.minimum(rho * A,                                   # (B, T)
                         rho.clamp(1 - epsilon, 1 + epsilon_high) * A)


def normalise_token_losses(per_token: Tensor, mask: Tensor, loss_type: str, *,
                           max_completion_length: int | None = None,
                           global_num_tokens: int | float | Tensor | None = None, world_size: int = 1) -> Tensor:
    """Aggregate per-token losses ℓ (B, T) into one number with the loss_type's normalisation.

    The one place each normalisation is written (m = mask, |o_i| = Σ_t m_{i,t}):
        "grpo":    1/B Σ_i (Σ_t m ℓ / max(1, |o_i|))             paper eq. 3: per-sequence mean, then mean
        "bnpo":    Σ_{i,t} m ℓ / max(1, Σ_i |o_i|)               token mean over this batch
        "dr_grpo": Σ_{i,t} m ℓ / (B · max_completion_length)     Dr. GRPO: constant denominator
        "dapo":    Σ_{i,t} m ℓ / dapo_divisor(global_num_tokens, world_size)
        "cispo":   as "dapo" (TRL normalises CISPO by the global token count too)

    `grpo_loss` calls it on its per-token loss, `micro_batch_weight` says how the micro-batches of one update
    add up to it, and the exercise checkers of notebooks 04 and 05 use it as their reference.

    Args:
        per_token: ℓ, (B, T); values at masked positions must be finite (they are multiplied by 0).
        mask: m, (B, T), 0/1 in any numeric dtype.
        loss_type: one of `LOSS_TYPES`.
        max_completion_length: "dr_grpo" only: the generation budget in tokens.
        global_num_tokens: "dapo" only: active tokens over all ranks; None means this batch's own count.
        world_size: "dapo" only: number of DDP ranks.

    Returns:
        a 0-dim tensor.

    Used by: `grpo_loss`
    """
    m = mask.to(per_token.dtype)                                    # (B, T) 0./1.
    masked = per_token * m                                          # (B, T) m ℓ
    if loss_type == "grpo":      # 1/B Σ_i 1/|o_i| Σ_t
        o_len = m.sum(dim=-1).clamp(min=1)                          # (B,) |o_i|
        return (masked.sum(dim=-1) / o_len).mean()
    if loss_type == "bnpo":      # Σ_i Σ_t / Σ_i |o_i|
        return masked.sum() / m.sum().clamp(min=1)
    if loss_type == "dr_grpo":   # Σ_i Σ_t / (B · L_max)
        return masked.sum() / (per_token.shape[0] * max_completion_length)
    if loss_type in ("dapo", "cispo"):  # Σ_i Σ_t / (N_global / world_size)
        n_global = m.sum() if global_num_tokens is None else torch.as_tensor(
            global_num_tokens, dtype=per_token.dtype, device=per_token.device)
        return masked.sum() / dapo_divisor(n_global, world_size)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def dapo_divisor(n_global: Tensor, world_size: int) -> Tensor:
    """What each rank divides its token-loss sum by for "dapo": max(1, N_global) / world_size.

    DDP *averages* gradients over its world_size ranks, so each rank multiplies by world_size: after the
    average the gradient is that of Σ over all ranks' tokens / N_global, the token mean of the global batch.

    Used by: `normalise_token_losses` ("dapo") and `grpo_lib.course.exercises.ex06.dapo_normaliser`
    """
    return n_global.clamp(min=1) / world_size


def micro_batch_weight(loss_type: str, *, rows: int, tokens: int, batch_rows: int, batch_tokens: int) -> float:
    """Weight of one micro-batch's `normalise_token_losses` so that the weighted micro-batches add up to the batch.

    Gradient accumulation splits the B rows of an update into micro-batches; each one's loss is normalised
    on its own rows, so it is weighted by the share of the batch's denominator it stands for: rows / B for
    the per-sequence losses ("grpo", "dr_grpo"), its share of the batch's active tokens for "bnpo", and 1
    for "dapo" (already divided by the global token count, the same for every micro-batch). For "bnpo" this
    differs from TRL, which gives every micro-batch the same weight 1/k (the mean of the micro-batches'
    token means; tests/test_golden_trl.py checks both).

    Args:
        rows, tokens: the micro-batch's completions and active tokens.
        batch_rows, batch_tokens: the same for the whole batch of this process.

    Used by: `grpo_lib.train.policy_update` (gradient accumulation)
    """
    if loss_type in ("grpo", "dr_grpo"):
        return rows / batch_rows
    if loss_type == "bnpo":
        return tokens / max(batch_tokens, 1)
    if loss_type in ("dapo", "cispo"):
        return 1.0
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def _check_inputs(logp, logp_old, logp_ref, advantages, mask, epsilon, epsilon_high, beta, loss_type,
                  max_completion_length, world_size, global_num_tokens=None, importance_sampling_level="token",
                  kl_estimator="k3", is_weights=None):
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, "
                         f"got {importance_sampling_level!r}")
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}")
    if loss_type == "cispo" and (epsilon_high is None or epsilon_high < 1):
        raise ValueError(f"loss_type='cispo' caps the importance weight at epsilon_high itself (ε_max, ScaleRL: 5.0), "
                         f"so it must be given and >= 1, got epsilon_high={epsilon_high!r}")
    if loss_type not in ALL_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {ALL_LOSS_TYPES}, got {loss_type!r}")
    if logp.ndim != 2:
        raise ValueError(f"logp must be (B, T) per-token log-probs, got shape {tuple(logp.shape)}")
    B, T = logp.shape
    if B == 0:
        raise ValueError("empty batch: logp has shape (0, T)")
    if tuple(mask.shape) != (B, T):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match logp shape {(B, T)}")
    if logp_old is not None and logp_old.shape != logp.shape:
        raise ValueError(f"logp_old shape {tuple(logp_old.shape)} does not match logp shape {(B, T)}")
    if beta > 0 and logp_ref is None:
        raise ValueError(f"beta = {beta} > 0 needs logp_ref (the reference log-probs); pass beta=0.0 to train without KL")
    if logp_ref is not None and logp_ref.shape != logp.shape:
        raise ValueError(f"logp_ref shape {tuple(logp_ref.shape)} does not match logp shape {(B, T)}")
    if tuple(advantages.shape) != (B,):
        raise ValueError(
            f"advantages must have shape (B,) = ({B},), one A_i per completion; got {tuple(advantages.shape)}. "
            "Flatten (N, G) advantages with A.reshape(-1)."
        )
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must contain only 0 and 1 (1 on completion tokens up to and including EOS)")
    for name, value in (("epsilon", epsilon), ("epsilon_high", epsilon_high), ("beta", beta)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    if is_weights is not None and (is_weights.ndim != 2 or is_weights.shape[0] != logp.shape[0]
                                   or is_weights.shape[1] not in (1, logp.shape[1])):
        raise ValueError(f"is_weights must be (B, T) or (B, 1) for logp of shape {tuple(logp.shape)}, "
                         f"got {tuple(is_weights.shape)}")
    _check_finite_where_active(logp, logp_old, logp_ref, advantages, mask, check_k3=kl_estimator == "k3")
    if epsilon < 0 or (epsilon_high is not None and epsilon_high < 0):
        raise ValueError(f"clip ranges must be >= 0, got epsilon={epsilon}, epsilon_high={epsilon_high}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if loss_type == "dr_grpo" and (max_completion_length is None or max_completion_length <= 0):
        raise ValueError(
            "loss_type='dr_grpo' divides by B * max_completion_length: pass max_completion_length "
            f"(the generation budget in tokens, > 0), got {max_completion_length!r}"
        )
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int (number of DDP ranks), got {world_size!r}")
    if max_completion_length is not None and not (
            isinstance(max_completion_length, numbers.Real) and not isinstance(max_completion_length, bool)
            and math.isfinite(max_completion_length) and max_completion_length > 0):
        raise ValueError(f"max_completion_length must be a finite number > 0 (the generation budget in tokens), "
                         f"got {max_completion_length!r}")
    if global_num_tokens is not None:
        n = global_num_tokens.item() if isinstance(global_num_tokens, Tensor) and global_num_tokens.numel() == 1 \
            else global_num_tokens
        local = int((mask != 0).sum())
        if isinstance(n, bool) or not isinstance(n, numbers.Real) or not math.isfinite(n) or n < local or n < 0:
            raise ValueError(
                f"global_num_tokens must be a finite count of the active tokens over all ranks, at least this "
                f"batch's own {local}, got {global_num_tokens!r} (a count of 0 or less would be clamped to 1 and "
                "scale the loss up)")


def _check_finite_where_active(logp, logp_old, logp_ref, advantages, mask, check_k3: bool = True) -> None:
    """Refuse NaN / inf at active positions (mask 1; padding may hold anything): one host sync when all is well."""
    keep = mask != 0                                                # (B, T)
    active_rows = keep.any(dim=1)                                   # (B,)
    checks = [(name, t.detach(), keep) for name, t in (("logp", logp), ("logp_old", logp_old), ("logp_ref", logp_ref))
              if t is not None]
    checks.append(("advantages", advantages.detach(), active_rows))
    bad = [where & ~torch.isfinite(t) for _, t, where in checks]
    # the overflow bound (choice 8): log-ratios above LOG_RATIO_LIMIT, where exp overflows float32
    ratios = [(name, d) for name, d in (
        ("log π_θ - log π_θold (log ρ)", None if logp_old is None else logp.detach().float() - logp_old.detach().float()),
        ("log π_ref - log π_θ (the k3 exponent)",
         None if logp_ref is None or not check_k3 else logp_ref.detach().float() - logp.detach().float()))
        if d is not None]
    too_big = [keep & (d > LOG_RATIO_LIMIT) for _, d in ratios]
    if not torch.stack([b.any() for b in bad + too_big]).any():
        return
    for (name, d), b in zip(ratios, too_big):
        if b.any() and not any(x.any() for x in bad):
            first = tuple(int(i) for i in b.nonzero()[0])
            raise ValueError(
                f"{name} is {d[first].item():.4g} at row {first[0]}, token {first[1]} ({int(b.sum())} active position(s) "
                f"above {LOG_RATIO_LIMIT:g}): exp of it overflows float32, so the loss and its gradient would be inf. "
                "The policy has moved too far from the one that sampled (a learning rate too high, too many updates "
                "per batch), or the log-probs do not belong together.")
    for (name, t, _), b in zip(checks, bad):
        if b.any():
            first = tuple(int(i) for i in b.nonzero()[0])
            at = f"row {first[0]}, token {first[1]}" if len(first) == 2 else f"row {first[0]}"
            raise ValueError(
                f"{name} holds {int(b.sum())} non-finite value(s) at active positions (mask 1), the first "
                f"{t[first].item()} at {at}; the loss would be NaN. Check what produced {name} "
                "(rewards, a model in float16, a learning rate too high).")


def grpo_loss(logp: Tensor, logp_old: Tensor | None, logp_ref: Tensor | None, advantages: Tensor, mask: Tensor, *,
              epsilon: float = 0.2, epsilon_high: float | None = None, beta: float = 0.04,
              loss_type: str = "grpo", max_completion_length: int | None = None,
              global_num_tokens: int | float | Tensor | None = None,
              world_size: int = 1, importance_sampling_level: str = "token", kl_estimator: str = "k3",
              use_bias_correction_kl: bool = False,
              is_weights: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Negated GRPO objective: ℓ_{i,t} = -(min(ρA, clip(ρ, 1-ε, 1+ε_high)A) - β·k3), masked and aggregated.

    The loss_type picks the normalisation over tokens and completions (`normalise_token_losses` has the
    formulas): "grpo" (paper eq. 3: per-sequence mean, then mean), "bnpo" (token mean over this batch),
    "dr_grpo" (Dr. GRPO: Σ / (B · max_completion_length)) or "dapo" (token mean over the whole global batch:
    DDP *averages* gradients over its world_size ranks, so each rank divides by global_num_tokens /
    world_size; with one process and the default global_num_tokens it equals "bnpo").

    Args:
        logp: log π_θ per completion token, (B, T), carries grad.
        logp_old: log π_θold for the same tokens, (B, T), detached. None means on-policy (μ = 1):
            logp.detach(), so ρ = 1 in value.
        logp_ref: log π_ref, (B, T), detached; may be None when beta == 0.
        advantages: A_i per completion, (B,) (group_advantages(...).reshape(-1)).
        mask: m, (B, T), 0/1 (any numeric or bool dtype), 1 on completion tokens up to and including EOS.
        epsilon: ε, clip range below 1 (and above, unless epsilon_high is given).
        epsilon_high: ε_high, clip range above 1 (DAPO: 0.28); None means ε.
        beta: β, weight of the k3 KL term (paper 0.04; TRL's default is now 0).
        loss_type: "grpo", "bnpo", "dr_grpo" or "dapo" (see above).
        max_completion_length: generation budget in tokens; required by "dr_grpo".
        global_num_tokens: "dapo" only: active tokens summed over all ranks (an all-reduced count);
            None means this batch's own count.
        world_size: "dapo" only: number of DDP ranks.
        importance_sampling_level: "token" (ρ_{i,t}) or "sequence" (GSPO: s_i = exp(mean_t log ρ_{i,t}),
            one ratio per completion, clipped with the same ε / ε_high).
        kl_estimator: "k3" (paper), "k2" or "k1" (`kl_estimate`).
        use_bias_correction_kl: multiply the KL term by ρ (or s_i), with its gradient (DeepSeek-V3.2; TRL's
            default True, ours False).
        is_weights: sampler-trainer correction weights from `sampling_importance_weights`, (B, T) or (B, 1),
            multiplied into the policy term (not the KL); None = no correction.

    Returns:
        loss: 0-dim tensor to minimise (fp32 when logp is bf16/fp16).
        stats: detached 0-dim tensors, token means over the active tokens of the batch:
            "kl": mean k3 (0 when logp_ref is None), "clip_fraction": share of tokens where clipping
            changed the min (ρ < 1-ε with A < 0, or ρ > 1+ε_high with A > 0), "clip_fraction_low" and
            "clip_fraction_high": the two halves of it, "ratio_mean": mean ρ. All 0 for an empty mask.
            "kl" is the term β multiplies (the chosen estimator, times ρ with use_bias_correction_kl). At
            sequence level the other three are means over the B completions of s_i (as TRL logs them); for
            "cispo", "clip_fraction_high" (= "clip_fraction") is TRL's cispo_clip_ratio, ρ > ε_max with A > 0.

    Raises:
        ValueError: mismatched shapes, a mask other than 0/1, negative or non-finite ε / ε_high / β, or a
            NaN / inf in logp, logp_old or logp_ref at an active position (mask 1) or in the advantage of
            a row with active tokens; the message names the input, the count and the first position.
            Padded positions may hold anything (-inf log-probs there are normal).

    Taught in: notebooks/04_the_loss.ipynb
    """
    _check_inputs(logp, logp_old, logp_ref, advantages, mask, epsilon, epsilon_high, beta, loss_type,
                  max_completion_length, world_size, global_num_tokens, importance_sampling_level, kl_estimator,
                  is_weights)
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    if logp.dtype in (torch.float16, torch.bfloat16):
        logp = logp.float()                                         # (B, T) the loss is computed in fp32
    keep = mask != 0                                                # (B, T) bool
    m = keep.to(logp.dtype)                                         # (B, T) 0./1.
    if logp_old is None:
        logp_old = logp.detach()                                    # (B, T) on-policy: ρ == 1 in value
    # zero-fill padded positions first, so nothing there can become inf/NaN in the loss or its gradient
    logp = logp.masked_fill(~keep, 0.0)                             # (B, T)
    logp_old = logp_old.to(logp.dtype).masked_fill(~keep, 0.0)      # (B, T)
    A = advantages.to(logp.dtype).masked_fill(~keep.any(dim=1), 0.0)  # (B,) a row without active tokens adds 0

    log_ratio = logp - logp_old                                     # (B, T)
    if importance_sampling_level == "sequence":
        log_ratio = sequence_log_ratio(log_ratio, m)                # (B, 1) GSPO: log s_i
    rho = torch.exp(log_ratio)                                      # (B, T), or (B, 1) at sequence level
    if loss_type == "cispo":   # sg(min(ρ, ε_max)) · A · log π_θ: every token keeps its gradient
        per_token = -(rho.clamp(max=epsilon_high).detach() * A[:, None] * logp)  # (B, T)
    else:
        per_token = -clipped_surrogate(rho, A, epsilon, epsilon_high).expand_as(logp)  # (B, T)
    if is_weights is not None:
        w = is_weights.detach().to(logp.dtype).expand_as(logp)     # (B, T)
        per_token = per_token * w.masked_fill(~keep, 0.0)           # the policy term only, as TRL
    kl = None
    if logp_ref is not None:
        kl = kl_estimate(logp, logp_ref.to(logp.dtype).masked_fill(~keep, 0.0), kl_estimator)  # (B, T)
        if use_bias_correction_kl:
            kl = kl * rho                                           # (B, T) ρ·k, gradient through ρ
        if beta != 0:
            per_token = per_token + beta * kl                       # (B, T)

    loss = normalise_token_losses(per_token, m, loss_type, max_completion_length=max_completion_length,
                                  global_num_tokens=global_num_tokens, world_size=world_size)

    with torch.no_grad():
        n_tok = m.sum().clamp(min=1)
        A_t = A[:, None]                                            # (B, 1)
        if loss_type == "cispo":   # TRL's cispo_clip_ratio: the weight capped where A > 0
            low = torch.zeros_like(rho, dtype=torch.bool)
            high = (rho > epsilon_high) & (A_t > 0)
        else:
            low = (rho < 1 - epsilon) & (A_t < 0)                   # clipped from below
            high = (rho > 1 + epsilon_high) & (A_t > 0)             # clipped from above
        if rho.shape[1] == 1 and m.shape[1] != 1:   # sequence level: means over all B completions (as TRL)
            mean = lambda x: x.to(m.dtype).mean()                   # noqa: E731
        else:
            mean = lambda x: (x.to(m.dtype) * m).sum() / n_tok      # noqa: E731
        stats = {
            "kl": (kl * m).sum() / n_tok if kl is not None else logp.new_zeros(()),
            "clip_fraction": mean(low | high),
            "clip_fraction_low": mean(low),
            "clip_fraction_high": mean(high),
            "ratio_mean": mean(rho),
        }
    stats = {k: v.detach() for k, v in stats.items()}
    return loss, stats
