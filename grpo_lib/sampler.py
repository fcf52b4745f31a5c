"""A sampler that is not quite the policy: the sampler-trainer mismatch, made on purpose and corrected.

With vLLM (TRL's use_vllm) the completions come from another engine: other kernels, bf16 weights, another
attention. Its log-probs of the sampled tokens differ from the trainer's, so the batch is slightly
off-policy even at μ = 1, and TRL reweights the policy term by the truncated (or masked) ratio
π_train / π_sampler (`grpo_lib.loss.sampling_importance_weights`; TRL's vllm_importance_sampling_*).

This engine samples with the policy itself, so there is no mismatch, unless `sampler_perturbation` asks for
one: the rollouts then come from a perturbed copy of π_θ, re-synced from it every step.

    sampler = sync_sampler(sampler, policy, "bf16", seed)       # weights copied from π_θ, then perturbed
    rollout = generate_completions(sampler, ...)                 # o ~ π_sampler
    metrics = sampler_correction(batch, policy, sampler, ...)    # log π_train - log π_sampler; weights

Choices made here (1-5 tested in tests/test_sampler.py):
1. Two perturbations (`parse_perturbation`): "bf16", a bfloat16 copy of π_θ (weights, buffers and the whole
   forward in bf16, as a bf16 inference engine runs, while π_θ keeps fp32 master weights), and "noise:σ",
   an fp32 copy whose every weight gets Gaussian noise of std σ (absolute, not relative to the weight).
2. The copy is made once and re-synced every step (`sync_sampler`): its weights are set from π_θ's (rounded
   to bf16 by the copy, or plus fresh noise), as TRL pushes the new weights to vLLM after each step. The
   noise is drawn from its own generator, seeded by the step alone, so every rank's sampler is the same
   model (one inference engine) and the global RNG is untouched.
3. The sampler's log-probs are a teacher-forced forward pass of the sampler over the sampled completions
   (`sampler_correction`), not the numbers of its decoding loop (vLLM returns those); both describe the
   distribution that sampled, up to the rounding between a KV-cached and a full pass. The trainer's are
   log π_θold: the recorded ones when μ > 1, else one no-grad pass of π_θ (TRL computes them too when the
   correction is on).
4. The correction weights multiply the policy term only when vllm_importance_sampling_correction is on
   (`ScoredRollout.is_weights`). The mismatch itself is reported whenever the sampler is perturbed, so an
   uncorrected run shows it too: TRL's `sampling/sampling_logp_difference/mean` and `/max`; the
   `sampling/importance_sampling_ratio/min`, `/mean`, `/max` of the weights only with the correction on (as
   TRL logs them).
5. Over ranks the metrics combine as TRL's gather does: the mean of the ranks' means, the max of the maxima,
   the min of the minima.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from grpo_lib import dist
from grpo_lib.loss import sampling_importance_weights
from grpo_lib.rollout import ScoredRollout, completion_logprobs, generation_mode

METRICS = {
    "sampling/sampling_logp_difference/mean": "mean |log π_train - log π_sampler| over the active tokens (TRL's name; "
                                              "with sampler_perturbation, mean over ranks)",
    "sampling/sampling_logp_difference/max": "max |log π_train - log π_sampler| over the active tokens of all ranks "
                                             "(TRL's name)",
    "sampling/importance_sampling_ratio/min": "smallest correction weight (after truncation or masking) over all "
                                              "ranks (TRL's name; with vllm_importance_sampling_correction)",
    "sampling/importance_sampling_ratio/mean": "mean correction weight, over the active tokens (token modes) or the "
                                               "completions (sequence modes), mean over ranks (TRL's name)",
    "sampling/importance_sampling_ratio/max": "largest correction weight over all ranks (TRL's name)",
}
"""the metrics of a step with a perturbed sampler (choice 4)"""


def parse_perturbation(spec: str) -> tuple[str, float]:
    """"none" -> ("none", 0.0), "bf16" -> ("bf16", 0.0), "noise:1e-3" -> ("noise", 0.001) (choice 1).

    Raises:
        ValueError: anything else, or σ not a finite number > 0 (the config refuses it first).
    """
    if spec in ("none", "bf16"):
        return spec, 0.0
    if spec.startswith("noise:"):
        try:
            sigma = float(spec.removeprefix("noise:"))
        except ValueError:
            sigma = math.nan
        if math.isfinite(sigma) and sigma > 0:
            return "noise", sigma
    raise ValueError(f"sampler_perturbation must be 'none', 'bf16' or 'noise:σ' with a finite σ > 0, got {spec!r}")


def sync_sampler(sampler: nn.Module | None, policy: nn.Module, spec: str, seed: int) -> nn.Module | None:
    """The step's sampler: `sampler` (or a new copy of `policy`) with its weights set from π_θ, perturbed (choice 2).

    Args:
        sampler: the sampler of the previous step, or None on the first.
        policy: π_θ, unwrapped.
        spec: sampler_perturbation: "none", "bf16" or "noise:σ".
        seed: seeds the noise ("noise:σ"); the same on every rank.

    Returns:
        None for "none" (the policy samples), else the sampler: eval mode, no gradients.

    Used by: grpo_lib.train
    """
    kind, sigma = parse_perturbation(spec)
    if kind == "none":
        return None
    with torch.no_grad():
        if sampler is None:
            sampler = copy.deepcopy(policy).requires_grad_(False).eval()
            if kind == "bf16":
                sampler = sampler.to(torch.bfloat16)
        source, target = list(policy.parameters()), list(sampler.parameters())
        if len(source) != len(target):
            raise ValueError(f"the sampler has {len(target)} parameters and the policy {len(source)}: not a copy of it")
        generators: dict[torch.device, torch.Generator] = {}
        for p, s in zip(source, target):
            if kind == "noise":
                if p.device not in generators:
                    generators[p.device] = torch.Generator(device=p.device).manual_seed(seed)
                noise = torch.randn(p.shape, generator=generators[p.device], device=p.device, dtype=torch.float32)
                s.copy_(p.float() + sigma * noise)
            else:
                s.copy_(p)                                   # bf16: the copy rounds to nearest
    return sampler


def _combine_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """TRL's gather: mean of the ranks' means, max of maxima, min of minima (choice 5)."""
    every = dist.all_gather_objects(metrics)
    out = {}
    for k in metrics:
        values = [m[k] for m in every]
        out[k] = max(values) if k.endswith("/max") else min(values) if k.endswith("/min") else sum(values) / len(values)
    return out


def sampler_correction(batch: ScoredRollout, policy: nn.Module, sampler: nn.Module | None, *, temperature: float,
                       correction: bool, mode: str, clip_min: float | None, clip_max: float | None,
                       chunk_size: int | None = None) -> dict[str, float]:
    """Compare the sampler's log-probs of the batch with the trainer's; set batch.is_weights when `correction`.

    Args:
        batch: the scored rollout (sampled by `sampler`); its logp_old is used when recorded (μ > 1).
        policy: π_θ, unwrapped (the trainer).
        sampler: from `sync_sampler`; None (no perturbation) does nothing and returns {}.
        temperature: τ of the sampling.
        correction: vllm_importance_sampling_correction: multiply the policy term by the weights.
        mode, clip_min, clip_max: vllm_importance_sampling_mode / _clip_min / _clip_max.
        chunk_size: rows per forward pass.

    Returns:
        `METRICS` (the two logp_difference ones always, the ratio ones with `correction`), combined over ranks.
        The time of the two passes is added to batch.scoring_seconds.

    Used by: grpo_lib.train
    """
    if sampler is None:
        return {}
    t0 = time.perf_counter()
    rollout = batch.rollout
    if batch.logp_old is not None:
        logp_train = batch.logp_old
    else:
        with generation_mode(policy):
            logp_train = completion_logprobs(policy, rollout, temperature, chunk_size)           # (B, T)
    with generation_mode(sampler):
        logp_sampler = completion_logprobs(sampler, rollout, temperature, chunk_size).float()  # (B, T)
    if correction:
        w, metrics = sampling_importance_weights(logp_train, logp_sampler, batch.mask, mode=mode, clip_min=clip_min,
                                                 clip_max=clip_max)
        batch.is_weights = w
    else:   # only the difference, which no mode changes; a bounded mask mode can never overflow to inf
        _, metrics = sampling_importance_weights(logp_train, logp_sampler, batch.mask, mode="token_mask",
                                                 clip_max=1.0)
        metrics = {k: v for k, v in metrics.items() if "logp_difference" in k}
    batch.scoring_seconds += time.perf_counter() - t0                 # the two passes are scoring work
    return _combine_over_ranks(metrics)
